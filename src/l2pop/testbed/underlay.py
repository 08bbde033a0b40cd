"""The underlay of a run: its namespaces, the underlay bridge, the hosts' veths, the relay.

Topology of one run with prefix P (``l2p`` + 4 hex)::

    root namespace:  the l2pop server on 127.0.0.1:PORT (when the control plane has one)
    P-ul             underlay bridge ``ulbr0`` with 192.0.2.254/24, where a relay (a socket
                     of this process) forwards TCP PORT to the server
    P-hN             host N: ``ul0`` (192.0.2.N/24, veth into ulbr0) and what its host kind
                     and control plane put there (agent, bridges, VXLAN devices, taps)
    P-vK             VM K: ``eth0``, the veth peer of its tap in its host

More than 250 hosts use 198.18.0.0/16 for the underlay.

Everything is undone by name or pid (``Teardown``): the run record is written before the
first namespace exists (so ``l2pop testbed clean`` never takes a live run's namespaces for
leftovers), every namespace is recorded before it is made, and all are deleted by name,
newest first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from l2pop.testbed import iproute, netns
from l2pop.testbed.capture import Capture
from l2pop.testbed.leftovers import RunRecord
from l2pop.testbed.nodes import Host, Run, underlay_addresses
from l2pop.testbed.relay import Relay

UNDERLAY_BRIDGE = "ulbr0"
UNDERLAY_MTU = 9000
#: iproute2 commands sent per ``ip -batch`` while building many hosts
BATCH = 400
REQUIRED_TOOLS = ("ip", "bridge", "ping", "tcpdump")


def check_machine() -> None:
    """Root and the iproute2, ping and tcpdump tools, or an error saying what is missing."""
    if os.geteuid() != 0:
        raise PermissionError("the testbed needs root (network namespaces)")
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (scripts/bootstrap installs it)")


class Underlay:
    """The namespaces of one run on one underlay bridge (see the module docstring)."""

    def __init__(self, run: Run, prefix: str = "") -> None:
        self.run = run
        self.prefix = prefix
        self.netns = ""  # the underlay namespace, P-ul
        self.relay_ip = ""
        self.plen = 24  # the underlay's prefix length (set by ``build``)
        self._record: RunRecord | None = None
        self._names: list[str] = []

    def open(self) -> None:
        """Pick the run prefix and record the run; from here on, teardown deletes every
        namespace this object makes."""
        check_machine()
        self.prefix = self.prefix or netns.new_prefix()
        if not netns.PREFIX_RE.match(self.prefix):
            raise ValueError(f"bad run prefix {self.prefix!r}")
        self._record = RunRecord(self.prefix, os.getpid())
        self._record.save()
        self.run.teardown.push(self._record.remove)
        self.run.teardown.push(self.close)

    # -- namespaces ---------------------------------------------------------------------

    def add_netns(self, role: str) -> str:
        """A new namespace ``P-role`` (``lo`` up), deleted by name at teardown."""
        name = f"{self.prefix}-{role}"
        self._names.append(name)  # recorded first: deleted even if the rest fails
        netns.add_netns(name)
        return name

    def remove_netns(self, name: str) -> None:
        """Delete one of this run's namespaces now (a VM that goes)."""
        netns.delete_netns(name)
        with contextlib.suppress(ValueError):
            self._names.remove(name)

    def close(self) -> None:
        """Delete every namespace of the run by name, newest first (idempotent)."""
        while self._names:
            netns.delete_netns(self._names.pop())

    # -- the underlay bridge and the hosts ---------------------------------------------------

    def build(self, n_hosts: int) -> list[Host]:
        """``P-ul`` with the bridge, and ``n_hosts`` host namespaces wired into it."""
        vteps, self.relay_ip, plen = underlay_addresses(n_hosts)
        self.plen = plen
        for address in (*vteps, self.relay_ip):
            netns.check_address(address)
        self.netns = ul = self.add_netns("ul")
        iproute.sysctl(
            ul, net__ipv6__conf__all__disable_ipv6=1, net__ipv6__conf__default__disable_ipv6=1
        )
        iproute.ip_batch(
            ul,
            [
                f"link add {UNDERLAY_BRIDGE} type bridge",
                f"link set {UNDERLAY_BRIDGE} mtu {UNDERLAY_MTU} up",
                f"addr add {self.relay_ip}/{plen} dev {UNDERLAY_BRIDGE}",
            ],
        )
        hosts = [self._add_host(i, vtep) for i, vtep in enumerate(vteps, start=1)]
        self._wire(hosts, plen)
        self.run.log(f"underlay {ul}: {len(hosts)} hosts on bridge {UNDERLAY_BRIDGE}")
        return hosts

    def _add_host(self, index: int, vtep: str) -> Host:
        name = f"h{index}"
        host_ns = self.add_netns(name)
        # IPv6 stays on (the ND tables live on the bridges) but no device of a host gets an
        # address of its own: no DAD, router solicitation or MLD noise to flood.
        iproute.sysctl(
            host_ns,
            net__ipv6__conf__all__addr_gen_mode=1,
            net__ipv6__conf__default__addr_gen_mode=1,
        )
        return Host(name, index, host_ns, vtep)

    @staticmethod
    def host_port(host: Host) -> str:
        """The underlay bridge's port (in ``P-ul``) whose veth peer is ``host``'s ``ul0``."""
        return host.name

    def _wire(self, hosts: list[Host], plen: int) -> None:
        """A veth per host: ``hN`` on the underlay bridge, ``ul0`` with the VTEP address."""
        lines: list[str] = []
        for host in hosts:
            port = self.host_port(host)
            lines.append(
                f"link add {port} mtu {UNDERLAY_MTU} type veth peer name ul0 netns {host.netns}"
            )
            lines.append(f"link set {port} master {UNDERLAY_BRIDGE} up")
            if len(lines) >= BATCH:
                iproute.ip_batch(self.netns, lines)
                lines = []
        iproute.ip_batch(self.netns, lines)
        for host in hosts:
            iproute.ip_batch(
                host.netns,
                [f"link set ul0 mtu {UNDERLAY_MTU} up", f"addr add {host.vtep_ip}/{plen} dev ul0"],
            )

    # -- reaching the server, watching the wire ------------------------------------------------

    def relay_to(self, port: int) -> str:
        """Relay ``relay_ip:port`` on the underlay to ``127.0.0.1:port``; the URL agents use."""
        relay = Relay(self.netns, (self.relay_ip, port), ("127.0.0.1", port)).start()
        self.run.teardown.push(relay.close)
        return f"http://{self.relay_ip}:{port}"

    def note_server(self, pid: int) -> None:
        """Record the server's pid, for ``l2pop testbed clean`` should this run die."""
        if self._record is not None:
            self._record.server_pid = pid
            self._record.save()

    def note_pidfiles(self, paths: list[str]) -> None:
        """Record daemons' pid files (an ``OvsInstance``'s), for ``l2pop testbed clean``."""
        if self._record is not None:
            self._record.pidfiles.extend(p for p in paths if p not in self._record.pidfiles)
            self._record.save()

    def capture(self, path: Path) -> Capture:
        """VXLAN packets crossing the underlay bridge, to ``path`` (a context manager)."""
        cap = Capture(self.netns, UNDERLAY_BRIDGE, path)
        self.run.teardown.push(cap.kill)
        return cap
