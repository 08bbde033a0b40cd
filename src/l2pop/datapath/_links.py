"""Link events of a namespace, for the datapaths that watch VM devices come and go.

``LinkWatcher(netns_fd, on_links)`` runs a thread on an rtnetlink socket subscribed to
RTMGRP_LINK (made in the namespace of ``netns_fd``) and calls ``on_links(names)`` with the
names of the links one read announced as new, changed or deleted, or with ``None`` when the
kernel dropped events (ENOBUFS: anything may have changed). No polling: the thread sleeps in
``select`` until the kernel or ``close`` wakes it.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
from collections.abc import Callable

from l2pop.datapath import _netlink as nl
from l2pop.datapath import _netns

log = logging.getLogger("l2pop.datapath")


class LinkWatcher:
    """A thread calling ``on_links(names | None)`` after link events (see the module notes)."""

    def __init__(self, netns_fd: int, on_links: Callable[[set[str] | None], None]) -> None:
        self._on_links = on_links
        with _netns.entered(netns_fd):
            self._sock = nl.RtnlSocket(groups=nl.RTMGRP_LINK)
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._run, name="l2pop-links", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close the socket (idempotent)."""
        if self._sock is None:
            return
        os.write(self._wake[1], b"x")
        self._thread.join(timeout=5)
        self._sock.close()
        self._sock = None  # type: ignore[assignment]
        for fd in self._wake:
            os.close(fd)

    def _run(self) -> None:
        sock, wake = self._sock, self._wake[0]
        while True:
            ready, _, _ = select.select([sock.fileno(), wake], [], [])
            if wake in ready:
                return
            names: set[str] | None = set()
            try:
                buf = sock.recv()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    log.error("link watcher stops: %s", exc)
                    return
                buf, names = b"", None  # events were lost: anything may have changed
            off = 0
            while names is not None and off + 16 <= len(buf):
                length, mtype, _ = nl.HDR3.unpack_from(buf, off)
                if mtype in (nl.RTM_NEWLINK, nl.RTM_DELLINK):
                    names.add(nl.parse_link(buf, off, off + length).name)
                off += (length + 3) & ~3
            if names is None or names:
                try:
                    self._on_links(names)
                except Exception:
                    log.exception("link listener failed")


def dump_links(sock: nl.RtnlSocket) -> list[nl.Link]:
    """Every link of the socket's namespace (one dump, statistics left out)."""
    parser = nl.LinkParser()
    sock.dump(nl.RTM_GETLINK, nl.link_dump_request(), parser)
    return parser.links


def link_by_name(sock: nl.RtnlSocket, name: str) -> nl.Link | None:
    """The link called ``name`` in the socket's namespace, None when there is none."""
    ext = nl.nla_u32(nl.IFLA_EXT_MASK, nl.RTEXT_FILTER_SKIP_STATS)
    request = nl.link_request(0, 0, 0, nl.nla_str(nl.IFLA_IFNAME, name), ext)
    try:
        replies = sock.request(nl.RTM_GETLINK, 0, request)
    except nl.NetlinkError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise
    for msg in replies:
        if nl.HDR3.unpack_from(msg)[1] == nl.RTM_NEWLINK:
            return nl.parse_link(msg, 0, len(msg))
    return None


def set_up(sock: nl.RtnlSocket, index: int) -> None:
    """Set link ``index`` up (a VM device the switch, not a bridge, takes)."""
    sock.request(nl.RTM_NEWLINK, 0, nl.link_request(index, nl.IFF_UP, nl.IFF_UP))
