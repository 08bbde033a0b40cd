"""Open vSwitch inside a testbed host namespace: one private ovsdb-server + ovs-vswitchd.

``OvsInstance(netns, directory)`` runs the two daemons of one host inside its namespace,
with everything they write (database, sockets, pid files, logs) in ``directory``;
``setup_underlay`` gives the host its VTEP address on an OVS bridge. The daemons are
children of this process (``subprocess.Popen``, no ``--detach``), so they are stopped by
the pid we hold; their pid files exist only for ``l2pop testbed clean`` (``pidfiles``).

Design notes:

* Userspace datapath (``datapath_type=netdev``). The kernels this testbed runs on may have
  no ``openvswitch`` module (nor gretap), and a kernel datapath is one per kernel, shared by
  every namespace, so it would not keep hosts apart anyway. With ``netdev`` bridges,
  ovs-vswitchd switches packets itself (AF_PACKET on veths, a tap for each internal port)
  and does VXLAN/GRE encapsulation itself ("userspace tunnelling"). It is slower than the
  kernel but needs nothing from it.
* A directory per instance. The Debian defaults (/var/run/openvswitch, /etc/openvswitch)
  are system-wide; two hosts cannot share them, and the machine's own OVS must never be
  touched. Every path is passed explicitly (``--db``, ``-t``, ``unix:<dir>/<br>.mgmt``),
  and OVS_RUNDIR/OVS_DBDIR/OVS_LOGDIR/OVS_SYSCONFDIR point at ``directory`` as well, so
  nothing falls back to a default (``ip netns exec`` passes the environment through).
  The bridges' OpenFlow sockets ``<dir>/<bridge>.mgmt`` are plain Unix sockets: reachable
  from any namespace.
* No OpenFlow controller is ever set: the flows are the ones written with ``ofctl``.

Pitfalls of userspace tunnelling and their fixes:

1. The VTEP address must live on an OVS bridge (``br-phy``: the uplink veth is its port,
   the address is on its internal port), or ovs-vswitchd finds no route/neighbour for the
   tunnel. ``setup_underlay`` does that.
2. The uplink veth still belongs to the namespace's kernel and answers ARP on its own:
   ``ip link set UPLINK arp off`` (``setup_underlay``).
3. The first packet to a new VTEP is dropped while ovs-vswitchd resolves its neighbour:
   preset it with ``tnl/neigh/set`` (``preset_neighbour``).
4. VM MTU at most 1450 over VXLAN and 1458 over GRE (``VXLAN_VM_MTU``, ``GRE_VM_MTU``).
5. TCP through userspace tunnels needs ``ethtool -K eth0 tx off`` in the VM (checksums
   are not filled in otherwise).
6. ``ovs-appctl`` talks to the default socket unless told ``-t <socket path>`` (``appctl``).
7. IPv6 on the hosts' and VMs' devices sends router solicitations, MLD and DAD through
   the bridges: disable it where it is not under test.
8. OpenFlow flows live in ovs-vswitchd's memory only, not in OVSDB: after ovs-vswitchd
   restarts, bridges and ports are back (from the database) but every flow (and every
   ``tnl/neigh`` entry) is gone. Whoever writes the flows must write them again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from l2pop.testbed import iproute
from l2pop.testbed.iproute import TestbedError
from l2pop.testbed.netns import check_address, kill_pid

__all__ = [
    "DAEMONS",
    "GRE_VM_MTU",
    "OVS_SCHEMA",
    "TOOLS",
    "VXLAN_VM_MTU",
    "OvsInstance",
    "available",
    "missing",
    "preset_neighbour",
    "setup_underlay",
]

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
#: the process names (``/proc/PID/comm``) of the two daemons
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
VXLAN_VM_MTU = 1450
GRE_VM_MTU = 1458


def missing() -> list[str]:
    """The OVS tools (and the schema file) this machine lacks; empty when all are there."""
    out = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not OVS_SCHEMA.exists():
        out.append(str(OVS_SCHEMA))
    return out


def available() -> bool:
    """Whether ``OvsInstance`` can run here (``scripts/bootstrap`` installs Open vSwitch)."""
    return not missing()


class OvsInstance:
    """ovsdb-server + ovs-vswitchd of one host, inside ``netns``, all files in ``directory``.

    ``start()`` returns once ovs-vswitchd has applied the database; ``stop()`` SIGTERMs
    both daemons by pid (SIGKILL after ``timeout``) and is idempotent; also a context
    manager. ``directory`` is created if needed and never deleted (the caller's temp dir).
    """

    def __init__(self, netns: str, directory: Path) -> None:
        self.netns = netns
        self.dir = directory
        self.db = directory / "conf.db"
        self.db_sock = directory / "db.sock"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stderr: dict[str, IO[bytes]] = {}

    # -- paths ------------------------------------------------------------------------------

    def pidfile(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.pid"

    def ctl(self, daemon: str = "ovs-vswitchd") -> Path:
        """The unixctl socket of ``daemon`` (what ``ovs-appctl -t`` needs)."""
        return self.dir / f"{daemon}.ctl"

    def log(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.log"

    def mgmt(self, bridge: str) -> str:
        """The OpenFlow target of ``bridge``: ``unix:<dir>/<bridge>.mgmt``."""
        return f"unix:{self.dir / (bridge + '.mgmt')}"

    @property
    def pidfiles(self) -> list[str]:
        """Both daemons' pid files (what a run record keeps for ``l2pop testbed clean``)."""
        return [str(self.pidfile(d)) for d in DAEMONS]

    @property
    def env(self) -> dict[str, str]:
        """The environment every OVS command gets: all default directories are ours."""
        d = str(self.dir)
        return {
            **os.environ,
            "OVS_RUNDIR": d,
            "OVS_DBDIR": d,
            "OVS_LOGDIR": d,
            "OVS_SYSCONFDIR": d,
        }

    # -- commands ---------------------------------------------------------------------------

    def _tool(self, *args: str, stdin: str | None = None, timeout: float = 15) -> str:
        proc = subprocess.run(
            list(args),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=self.env,
        )
        if proc.returncode != 0:
            raise TestbedError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
        return proc.stdout

    def vsctl(self, *args: str, wait: bool = True) -> str:
        """``ovs-vsctl --db=unix:<dir>/db.sock ARGS``; with ``wait`` it returns once
        ovs-vswitchd has applied the change (``wait=False`` while it is not running)."""
        opts = [f"--db=unix:{self.db_sock}", "--timeout=10"]
        if not wait:
            opts.append("--no-wait")
        return self._tool("ovs-vsctl", *opts, *args)

    def ofctl(
        self,
        bridge: str,
        command: str,
        *args: str,
        stdin: str | None = None,
        options: Sequence[str] = (),
    ) -> str:
        """``ovs-ofctl OPTIONS COMMAND unix:<dir>/<bridge>.mgmt ARGS`` (``add-flows ... -``
        reads ``stdin``; ``options`` e.g. ``("-O", "OpenFlow15")``)."""
        return self._tool("ovs-ofctl", *options, command, self.mgmt(bridge), *args, stdin=stdin)

    def appctl(self, *args: str, daemon: str = "ovs-vswitchd") -> str:
        """``ovs-appctl -t <dir>/<daemon>.ctl ARGS``."""
        return self._tool("ovs-appctl", "-t", str(self.ctl(daemon)), "--timeout=10", *args)

    # -- daemons ----------------------------------------------------------------------------

    def pid(self, daemon: str) -> int | None:
        """The pid of ``daemon`` while it runs (None otherwise)."""
        proc = self._procs.get(daemon)
        return proc.pid if proc is not None and proc.poll() is None else None

    def all_pids(self) -> list[int]:
        """Every pid this instance started, running or not (to check they are gone)."""
        return [p.pid for p in self._procs.values()]

    def _spawn(self, daemon: str, *args: str) -> None:
        """Start ``daemon`` in the namespace as our child (``ip netns exec`` execs it, so the
        child's pid is the daemon's)."""
        cmd = ["ip", "netns", "exec", self.netns, daemon, *args]
        cmd += [f"--pidfile={self.pidfile(daemon)}", f"--unixctl={self.ctl(daemon)}"]
        cmd += [f"--log-file={self.log(daemon)}", "-vconsole:off", "-vfile:info"]
        old = self._stderr.pop(daemon, None)
        if old is not None:
            old.close()
        err = open(self.dir / f"{daemon}.stderr", "ab")  # noqa: SIM115 (closed in stop)
        self._stderr[daemon] = err
        self._procs[daemon] = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=self.env,
            start_new_session=True,  # a Ctrl-C reaches the test, which tears down in order
        )

    def _wait(self, daemon: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            proc = self._procs[daemon]
            if proc.poll() is not None:
                raise TestbedError(
                    f"{daemon} in {self.netns} exited with {proc.returncode}; see "
                    f"{self.log(daemon)}"
                )
            try:
                if ready():
                    return
            except (TestbedError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{daemon} in {self.netns} not ready after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def start(self, timeout: float = 10.0) -> OvsInstance:
        """Create the database, start ovsdb-server and ovs-vswitchd; returns when both
        answer. On failure whatever was started is stopped again."""
        if self._procs:
            raise RuntimeError("OvsInstance already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            if not self.db.exists():
                self._tool("ovsdb-tool", "create", str(self.db), str(OVS_SCHEMA))
            self._spawn("ovsdb-server", str(self.db), f"--remote=punix:{self.db_sock}")
            self._wait("ovsdb-server", lambda: self.vsctl("show", wait=False) is not None, timeout)
            self.vsctl("init", wait=False)
            self.start_vswitchd(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_vswitchd(self, timeout: float = 10.0) -> None:
        """Start ovs-vswitchd on our database; returns once it has applied it."""
        self._spawn("ovs-vswitchd", f"unix:{self.db_sock}")
        self._wait("ovs-vswitchd", lambda: bool(self.appctl("version")), timeout)
        # a write waits until ovs-vswitchd has applied the whole database (cur_cfg)
        self.vsctl("set", "Open_vSwitch", ".", f"external_ids:l2pop-started={time.time_ns()}")

    def kill_vswitchd(self) -> None:
        """``kill -9`` ovs-vswitchd by its pid, as in a crash (a fault for tests)."""
        proc = self._procs.get("ovs-vswitchd")
        if proc is not None and proc.poll() is None:
            kill_pid(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart_vswitchd(self, timeout: float = 10.0) -> None:
        """Stop ovs-vswitchd if it runs (SIGTERM by pid) and start it again. Bridges and
        ports come back from OVSDB; flows do not (see the module docstring)."""
        self._stop_one("ovs-vswitchd", timeout)
        self.start_vswitchd(timeout)

    def _stop_one(self, daemon: str, timeout: float) -> None:
        proc = self._procs.get(daemon)
        if proc is not None and proc.poll() is None:
            kill_pid(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_pid(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM ovs-vswitchd then ovsdb-server by pid, SIGKILL after ``timeout``; every
        child is reaped. Idempotent."""
        for daemon in reversed(DAEMONS):
            self._stop_one(daemon, timeout)
        for err in self._stderr.values():
            err.close()
        self._stderr.clear()

    @property
    def running(self) -> bool:
        """Whether any daemon this instance started is still alive."""
        return any(proc.poll() is None for proc in self._procs.values())

    def rss_kib(self) -> dict[str, int]:
        """``VmRSS`` (KiB) of each running daemon, from /proc/PID/status."""
        out: dict[str, int] = {}
        for daemon in DAEMONS:
            pid = self.pid(daemon)
            if pid is None:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[daemon] = int(line.split()[1])
        return out

    def __enter__(self) -> OvsInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a host's underlay on OVS ------------------------------------------------------------------


def setup_underlay(
    ovs: OvsInstance,
    uplink: str,
    vtep_cidr: str,
    *,
    bridge: str = "br-phy",
    mtu: int | None = None,
) -> str:
    """Move the host's VTEP address onto an OVS bridge: ``bridge`` (netdev) gets ``uplink``
    (a veth in ``ovs.netns``, its kernel addresses flushed, ARP off) as a port and
    ``vtep_cidr`` on its internal port. Returns the internal port's MAC (what the other
    hosts preset with ``preset_neighbour``)."""
    check_address(vtep_cidr)
    ns = ovs.netns
    iproute.ip(ns, "addr", "flush", "dev", uplink)
    iproute.ip(ns, "link", "set", uplink, "arp", "off", "up")
    ovs.vsctl(
        "--may-exist", "add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev"
    )
    ovs.vsctl("--may-exist", "add-port", bridge, uplink)
    lines = []
    if mtu is not None:
        lines.append(f"link set {bridge} mtu {mtu}")
    lines += [f"addr add {vtep_cidr} dev {bridge}", f"link set {bridge} up"]
    iproute.ip_batch(ns, lines)
    return str(ovs.vsctl("get", "interface", bridge, "mac_in_use").strip().strip('"'))


def preset_neighbour(ovs: OvsInstance, vtep_ip: str, mac: str, *, bridge: str = "br-phy") -> None:
    """Tell ovs-vswitchd the MAC of a remote VTEP, so the first packet to it is not lost
    (``tnl/neigh/set``). Lost again when ovs-vswitchd restarts."""
    check_address(vtep_ip)
    ovs.appctl("tnl/neigh/set", bridge, vtep_ip, mac)
