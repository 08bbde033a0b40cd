"""OpenFlow for the ovs datapath: ``ovs-ofctl`` for bundles and dumps, and a watch on the
bridge's management socket that notices ovs-vswitchd going away.

``OfCtl`` is the interface the datapath programs through: ``bundle(lines)`` (text mods,
atomic) and ``dump()`` (l2pop's flows and groups as ``_pipeline.Found`` + the base-flow
verdict). ``_ofwire.OfWire`` implements it in binary OpenFlow on the same socket (what the
datapath uses); this ovs-ofctl implementation is its reference and its fallback.

* Programming goes through ``ovs-ofctl -O OpenFlow15 bundle TARGET -``: one process per batch,
  flow and group mods mixed, applied atomically (all or nothing) by the switch. A process costs
  ~10 ms; a 20,000-line bundle ~0.2 s, so a batch is never split per flow (the per-flow way,
  one process each, is ~80 flows/s).
* Dumps are ``--no-stats`` (smaller text, and the counters are not ours to read) in OpenFlow
  1.5, whose output spells actions as ``set_field:VALUE->FIELD``, the form ``_pipeline``
  writes and parses.
* ``SwitchWatch`` holds one OpenFlow connection open on ``<bridge>.mgmt`` (a service
  connection, not a controller: setting a controller would make ovs-vswitchd flush the flows).
  When ovs-vswitchd exits the connection closes; flows and groups live only in its memory, so
  the datapath must then assume everything it programmed is gone. The watch reconnects and
  calls ``on_change`` after each loss and reconnect. It answers echo requests; it never sends
  anything else.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Sequence

from l2pop.datapath import _pipeline as pl

log = logging.getLogger("l2pop.datapath.ovs")

OFCTL = "ovs-ofctl"
#: OpenFlow 1.5 (what the dumps are read in)
OF15 = "OpenFlow15"
#: how long one ovs-ofctl may take (a 20k bundle takes ~0.3 s)
TIMEOUT_S = 60.0

_OFP_VERSION = 6  # 1.5
_HELLO, _ECHO_REQUEST, _ECHO_REPLY = 0, 2, 3
_HEADER = struct.Struct("!BBHI")


class OfctlError(OSError):
    """``ovs-ofctl`` failed; ``text`` is what it said (the mods it refused, when it names
    them)."""

    def __init__(self, command: str, text: str) -> None:
        super().__init__(errno.EIO, f"ovs-ofctl {command}: {text}")
        self.text = text


class OfCtl:
    """``ovs-ofctl`` against one bridge's OpenFlow target (``unix:<rundir>/<bridge>.mgmt``)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def _run(
        self, command: str, *args: str, opts: Sequence[str] = (), stdin: str | None = None
    ) -> str:
        try:
            proc = subprocess.run(
                [OFCTL, "-O", OF15, *opts, command, self.target, *args],
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                timeout=TIMEOUT_S,
            )
        except FileNotFoundError as exc:
            raise OfctlError(command, f"{OFCTL} is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise OfctlError(command, f"no answer in {TIMEOUT_S:.0f}s") from exc
        if proc.returncode != 0:
            raise OfctlError(command, proc.stderr.strip() or f"exit {proc.returncode}")
        return proc.stdout

    def bundle(self, lines: Sequence[str]) -> None:
        """Apply ``lines`` (``flow ...``/``group ...`` mods) as one atomic bundle; nothing
        is applied when it raises."""
        if lines:
            self._run("bundle", "-", stdin="\n".join(lines) + "\n")

    def dump_flows(self, match: str) -> str:
        """The flows matching ``match`` (e.g. a cookie/mask), without counters: the text."""
        return self._run("dump-flows", match, opts=("--no-stats",))

    def dump_flows_with_stats(self, match: str) -> list[str]:
        return self._run("dump-flows", match).splitlines()

    def dump_groups(self) -> list[str]:
        return self._run("dump-groups").splitlines()

    def dump(self) -> tuple[dict[int, pl.Found], bool]:
        """l2pop's flows and groups read back: VNI -> ``Found``, and whether every base flow
        is there (``_pipeline.parse_flows``/``parse_groups`` of the two dumps). Raises
        ``OfctlError`` when the switch cannot be read."""
        found: dict[int, pl.Found] = {}
        base = pl.parse_flows(self.dump_flows(f"cookie={pl.OURS:#x}/{pl.OURS_MASK:#x}"), found)
        pl.parse_groups(self.dump_groups(), found)
        return found, base


class SwitchWatch:
    """A thread holding an OpenFlow connection to ``path`` (the bridge's mgmt socket);
    ``on_change()`` is called when the connection is lost and again when it is back, so the
    datapath knows its flows may be gone. ``connected`` says whether it is up now."""

    def __init__(self, path: str, on_change: Callable[[], None], retry_s: float = 0.2) -> None:
        self.path = path
        self._on_change = on_change
        self._retry_s = retry_s
        self.connected = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="l2pop-ofwatch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1

    def _stopped(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._wake_r], [], [], timeout)
        return bool(ready)

    def _run(self) -> None:
        first = True
        while True:
            sock = self._connect()
            if sock is None:
                if self._stopped(self._retry_s):
                    return
                continue
            self.connected = True
            if not first:
                self._fire()  # back: whatever we programmed before is gone
            first = False
            try:
                if self._serve(sock):
                    return
            finally:
                sock.close()
                self.connected = False
            self._fire()  # lost

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
            sock.sendall(_HEADER.pack(_OFP_VERSION, _HELLO, _HEADER.size, 1))
        except OSError:
            sock.close()
            return None
        return sock

    def _serve(self, sock: socket.socket) -> bool:
        """Read until the connection ends (False) or ``close`` (True)."""
        buf = b""
        while True:
            ready, _, _ = select.select([sock.fileno(), self._wake_r], [], [])
            if self._wake_r in ready:
                return True
            try:
                data = sock.recv(65536)
            except OSError:
                return False
            if not data:
                return False
            buf += data
            while len(buf) >= _HEADER.size:
                version, mtype, length, xid = _HEADER.unpack_from(buf)
                if length < _HEADER.size or len(buf) < length:
                    break
                if mtype == _ECHO_REQUEST:
                    reply = _HEADER.pack(version, _ECHO_REPLY, length, xid) + buf[8:length]
                    try:
                        sock.sendall(reply)
                    except OSError:
                        return False
                buf = buf[length:]

    def _fire(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("switch watch callback failed")
