"""Host kinds by name, and testbeds whose hosts are of several kinds.

``host_kinds(kind, kinds, n_hosts, heartbeat)`` is what ``Testbed(kind=..., kinds=...)``
does with its arguments: a kind is a ``HostKind`` or its name (``linux``, ``ovs``,
``memory``); ``kinds`` maps some host names to another kind than ``kind``:

    Testbed(4, kinds={"h3": "ovs", "h4": "ovs"})    # h1, h2 linux; h3, h4 Open vSwitch
    Testbed(2, kind="ovs")                           # both Open vSwitch

A name stands for one instance per testbed, so every OVS host shares one ``OvsHost`` (it
presets each host's neighbours knowing all of them). A mix is a ``MixedHosts``: a
``HostKind`` that hands each call to the kind of the host it is about, so the control
planes and ``Testbed`` see one kind as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from l2pop.testbed.hosts import HostKind, LinuxHost, SwarmHosts, TableMonitor
from l2pop.testbed.nodes import Host, Run, Vm
from l2pop.testbed.ovshost import OvsHost
from l2pop.testbed.tables import KernelNetwork
from l2pop.testbed.underlay import Underlay

#: the host kinds a name can stand for
KIND_NAMES = ("linux", "ovs", "memory")


def make_kind(name: str, heartbeat: float = 2.0) -> HostKind:
    """A fresh host kind called ``name``."""
    if name == "linux":
        return LinuxHost(heartbeat)
    if name == "ovs":
        return OvsHost(heartbeat)
    if name == "memory":
        return SwarmHosts()
    raise ValueError(f"unknown host kind {name!r}; choose one of {', '.join(KIND_NAMES)}")


class MixedHosts(HostKind):
    """Hosts of several kinds: each call goes to the kind of the host it names (``of``).
    Every kind must be namespaced (memory agents have no host to share an underlay with)."""

    name = "mixed"

    def __init__(self, by_host: Mapping[str, HostKind], default: HostKind) -> None:
        self.by_host = dict(by_host)
        self.default = default
        for kind in self.kinds:
            if not kind.namespaced:
                raise ValueError(f"{kind.name} hosts cannot share a testbed with other kinds")

    @property
    def kinds(self) -> list[HostKind]:
        """Every distinct kind, the default first."""
        out = [self.default]
        for kind in self.by_host.values():
            if all(kind is not k for k in out):
                out.append(kind)
        return out

    def of(self, host: Host | str) -> HostKind:
        """The kind of ``host``."""
        return self.by_host.get(host if isinstance(host, str) else host.name, self.default)

    def _split(self, hosts: Sequence[Host]) -> list[tuple[HostKind, list[Host]]]:
        return [(k, [h for h in hosts if self.of(h) is k]) for k in self.kinds]

    def prepare(
        self, hosts: Sequence[Host], everyone: Sequence[Host], run: Run, underlay: Underlay | None
    ) -> None:
        for kind, mine in self._split(hosts):
            if mine:
                kind.prepare(mine, everyone, run, underlay)

    def start_agents(self, hosts: Sequence[Host], server_url: str, run: Run) -> None:
        for kind, mine in self._split(hosts):
            if mine:
                kind.start_agents(mine, server_url, run)

    def start_agent(self, host: Host, server_url: str, run: Run) -> None:
        self.of(host).start_agent(host, server_url, run)

    def plug(self, vm: Vm, host: Host) -> None:
        self.of(host).plug(vm, host)

    def unplug(self, vm: Vm, host: Host) -> None:
        self.of(host).unplug(vm, host)

    def tables(self, host: Host) -> dict[int, KernelNetwork]:
        return self.of(host).tables(host)

    def add_foreign(self, host: Host) -> None:
        self.of(host).add_foreign(host)

    def foreign_state(self, host: Host) -> dict[str, bool]:
        return self.of(host).foreign_state(host)

    def monitor(self, host: Host) -> TableMonitor:
        return self.of(host).monitor(host)


def host_kinds(
    kind: HostKind | str | None,
    kinds: Mapping[str, HostKind | str] | None,
    n_hosts: int,
    heartbeat: float = 2.0,
) -> HostKind:
    """The host kind of a testbed of ``n_hosts`` (see the module docstring): ``kind`` for
    every host (default linux) but those ``kinds`` names. Raises ``ValueError`` for an
    unknown kind name or a host the testbed does not have."""
    made: dict[str, HostKind] = {}

    def resolve(value: HostKind | str) -> HostKind:
        if isinstance(value, HostKind):
            return value
        if value not in made:
            made[value] = make_kind(value, heartbeat)
        return made[value]

    default = resolve(kind if kind is not None else "linux")
    made.setdefault(default.name, default)  # the default's name means the default itself
    if not kinds:
        return default
    names = {f"h{i}" for i in range(1, n_hosts + 1)}
    unknown = sorted(set(kinds) - names)
    if unknown:
        raise ValueError(f"kinds names hosts the testbed does not have: {', '.join(unknown)}")
    by_host = {host: resolve(value) for host, value in kinds.items()}
    if all(k is default for k in by_host.values()):
        return default
    return MixedHosts(by_host, default)
