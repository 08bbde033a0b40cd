"""``sd_notify(3)`` without libsystemd: tell a ``Type=notify`` unit's manager how we are.

systemd passes the unit's process ``NOTIFY_SOCKET``: the address of an ``AF_UNIX``
``SOCK_DGRAM`` socket, a path, or an abstract name written with a leading ``@``. A message is
one datagram of newline-separated ``VARIABLE=value`` lines: ``READY=1`` (``systemctl start``
returns), ``STOPPING=1``, ``STATUS=...`` (shown by ``systemctl status``).

Without ``NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call does nothing, so
the server and the agents call these unconditionally. A failed send is logged and otherwise
ignored: the manager then times the start out, which is its job, not ours. Who sends what and
when: docs/adr/0026-operating-the-services.md.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Mapping

log = logging.getLogger("l2pop.sdnotify")

ENV_NOTIFY_SOCKET = "NOTIFY_SOCKET"
#: ``struct ucred``: pid, uid, gid (the credentials the kernel attaches, SCM_CREDENTIALS)
_UCRED = struct.Struct("iII")


def socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address for a ``NOTIFY_SOCKET`` value; None for one we do not speak
    (``vsock:``, a relative path)."""
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, lines joined by ``\\n``); True if it was sent."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_NOTIFY_SOCKET)
    if not value:
        return False
    address = socket_address(value)
    if address is None:
        log.warning("%s=%s: not an AF_UNIX socket; not notifying", ENV_NOTIFY_SOCKET, value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", value, exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """``READY=1``: the service does what it is for (see the ADR for each command)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    """``STOPPING=1``: shutting down; sent once the stop began."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """``STATUS=<text>``: one line for ``systemctl status``."""
    return notify(f"STATUS={text}")


class Relay:
    """A notify socket of our own, for child processes whose readiness makes ours.

    ``l2pop server --workers N`` is ready when every worker serves: each worker is started
    with ``NOTIFY_SOCKET`` naming this relay (``environ()``), sends its ``READY=1`` here, and
    the supervisor asks ``ready_pids()`` which of them have. Senders are told apart by the
    kernel's credentials on each datagram (``SO_PASSCRED``), not by anything they write. The
    socket is an abstract name (nothing on disk to clean up), unique to this process.
    """

    def __init__(self) -> None:
        self.name = f"@l2pop-notify-{os.getpid()}-{os.urandom(4).hex()}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.bind("\0" + self.name[1:])
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise
        self._ready: set[int] = set()

    def environ(self) -> dict[str, str]:
        """What a child's environment needs to notify this relay."""
        return {ENV_NOTIFY_SOCKET: self.name}

    def ready_pids(self) -> set[int]:
        """The pids that have sent ``READY=1`` so far (reads what is queued, never blocks)."""
        creds_size = socket.CMSG_SPACE(_UCRED.size)
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, creds_size)
            except (BlockingIOError, InterruptedError):
                return set(self._ready)
            if b"READY=1" not in data.split(b"\n"):
                continue
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, _, _ = _UCRED.unpack(payload[: _UCRED.size])
                    self._ready.add(pid)

    def close(self) -> None:
        self._sock.close()
