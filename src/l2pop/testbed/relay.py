"""The TCP relay that lets agents on the underlay reach a server on the root's loopback.

Design note: the root namespace gets no address and no route for the testbed's underlay
(docs/design.md, "Testing"), so an agent in a host namespace cannot reach 127.0.0.1 of the
root. The relay's listening socket is made inside the underlay namespace (a socket keeps
the namespace it was created in) and its outgoing connections are made by threads of this
process, which live in the root namespace.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from l2pop.datapath import _netns


class Relay:
    """A TCP relay from ``listen`` inside namespace ``netns`` to ``target`` in the caller's
    (root) namespace: how agents on the underlay reach a server on the root's loopback.

    The listening socket is created inside the namespace (a socket keeps the namespace it
    was made in); the outgoing connections are made by threads in the root namespace.
    """

    def __init__(self, netns: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.netns = netns
        self.listen = listen
        self.target = target
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> Relay:
        fd = _netns.open_netns(self.netns)
        try:
            with _netns.entered(fd):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            os.close(fd)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.listen)
        sock.listen(128)
        self._sock = sock
        threading.Thread(target=self._accept, name="l2pop-relay", daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._conns.update((client, upstream))
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._conns.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop the relayed connections but keep listening (a flapping link)."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
