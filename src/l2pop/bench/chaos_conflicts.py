"""Deliberate conflicts of the chaos clients: each must be refused with 409, and leave
nothing (read back at once; a refused create's name must never appear)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from l2pop.bench.chaos_core import (
    ACK,
    INDETERMINATE,
    REFUSED,
    ClientCore,
    Gone,
    NetState,
    Op,
    PortState,
    as_json,
    port_of,
)
from l2pop.wire import NetworkOut, PortOut

Lister = Callable[[], "list[NetworkOut] | list[PortOut] | None"]


class ConflictOps(ClientCore):
    def _conflict_create(
        self,
        kind: str,
        name: str,
        lister: Lister,
        create: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """``create(*args, name=name, **kwargs)`` must be refused with 409 and leave nothing."""
        self.refused_names.add(name)  # whatever happens, nothing may carry this name
        op, r = self._send(kind, name, create, *args, name=name, **kwargs)
        if op.outcome == ACK and r is not None:
            answered = as_json(r)
            self._problem("conflict_accepted", name, f"{kind}: {op.status} {answered}"[:400])
        elif op.outcome == REFUSED and op.status != 409:
            self._problem("conflict_status", name, f"{kind}: {op.status}, not 409: {op.detail}")
        found = lister()
        if found is None:
            self._problem("unresolved", name, f"{kind}: no read-back")
            return
        if op.outcome == INDETERMINATE:
            op.resolved = "before" if not any(x.name == name for x in found) else None
        if any(x.name == name for x in found):
            left = [as_json(x) for x in found if x.name == name]
            self._problem("leftover", name, f"{kind}: {left}")

    def dup_mac(self) -> None:
        other = self._pick()
        name, ips = self._name("x"), self._ips(1)
        host = self.rng.choice([None, *self.hosts])
        self._conflict_create(
            "conflict_dup_mac",
            name,
            lambda: self._list(lambda: self.api.ports(network_id=other.network_id)),
            self.api.create_port,
            other.network_id,
            mac=other.mac,
            fixed_ips=ips,
            host=host,
        )

    def dup_ip(self) -> None:
        with_ips = [p for p in self.ports.values() if p.fixed_ips]
        if not with_ips:
            return
        other = self.rng.choice(with_ips)
        ip = self.rng.choice(other.fixed_ips)
        name = self._name("x")
        mac, ips = self._mac(), [ip, *self._ips(self.rng.randint(0, 1))]
        self._conflict_create(
            "conflict_dup_ip",
            name,
            lambda: self._list(lambda: self.api.ports(network_id=other.network_id)),
            self.api.create_port,
            other.network_id,
            mac=mac,
            fixed_ips=ips,
        )

    def dup_vni(self) -> None:
        other = self.rng.choice(list(self.nets.values()))
        self._conflict_create(
            "conflict_dup_vni",
            self._name("x"),
            lambda: self._list(self.api.networks),
            self.api.create_network,
            vni=other.vni,
        )

    def _conflict_update(
        self,
        kind: str,
        target: str,
        check: Callable[[Op], None],
        call: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """``call(*args, **kwargs)`` must be refused with 409; ``check`` reads it back."""
        op, r = self._send(kind, target, call, *args, **kwargs)
        if op.outcome == ACK:
            answered = as_json(r) if r is not None else ""
            self._problem("conflict_accepted", target, f"{kind}: {op.status} {answered}"[:400])
        elif op.outcome == REFUSED and op.status != 409:
            self._problem("conflict_status", target, f"{kind}: {op.status}, not 409: {op.detail}")
        if op.outcome == INDETERMINATE:
            op.resolved = "before"
        check(op)

    def dup_ip_update(self) -> None:
        nets = Counter(p.network_id for p in self.ports.values() if p.fixed_ips)
        net = self.rng.choice([n for n, c in nets.items() if c >= 2])
        port, other = self.rng.sample(
            [p for p in self.ports.values() if p.network_id == net and p.fixed_ips], 2
        )
        ips = [self.rng.choice(other.fixed_ips)]
        self._conflict_update(
            "conflict_dup_ip_update",
            port.id,
            lambda op: self._unchanged_port(op, port),
            self.api.update_port,
            port.id,
            fixed_ips=ips,
        )

    def mac_change_active(self) -> None:
        port = self._pick(bound=True)
        got = self._read(lambda: self.api.port(port.id))
        if not isinstance(got, PortOut) or got.status != "ACTIVE":
            return  # not ACTIVE (yet): nothing to provoke
        self._conflict_update(
            "conflict_mac_change_active",
            port.id,
            lambda op: self._unchanged_port(op, port),
            self.api.update_port,
            port.id,
            mac=self._mac(),
        )

    def delete_nonempty_network(self) -> None:
        used = {p.network_id for p in self.ports.values()}
        net = self.rng.choice([n for n in self.nets.values() if n.id in used])
        self._conflict_update(
            "conflict_delete_nonempty",
            net.id,
            lambda op: self._unchanged_network(op, net),
            self.api.delete_network,
            net.id,
        )

    def _unchanged_port(self, op: Op, port: PortState) -> None:
        got = self._read(lambda: self.api.port(port.id))
        if got is None:
            self._problem("unresolved", port.id, f"{op.kind}: no read-back")
            return
        seen = None if isinstance(got, Gone) else port_of(got)
        if seen != port:
            check = "leftover" if op.outcome != ACK else "conflict_accepted"
            self._problem(check, port.id, f"{op.kind} ({op.outcome}) changed it: {seen}")
            if op.outcome == INDETERMINATE:
                op.resolved = None
            if seen is None:
                self.ports.pop(port.id, None)
            else:
                self.ports[port.id] = seen

    def _unchanged_network(self, op: Op, net: NetState) -> None:
        got = self._read(lambda: self.api.network(net.id))
        ports = self._list(lambda: self.api.ports(network_id=net.id))
        if got is None or ports is None:
            self._problem("unresolved", net.id, f"{op.kind}: no read-back")
            return
        gone = isinstance(got, Gone)
        want = {p.id for p in self.ports.values() if p.network_id == net.id}
        if gone or {p.id for p in ports} != want:
            check = "leftover" if op.outcome != ACK else "conflict_accepted"
            status = 404 if gone else 200
            self._problem(check, net.id, f"{op.kind} ({op.outcome}): network {status}")
            if op.outcome == INDETERMINATE:
                op.resolved = None
            if gone:
                self.nets.pop(net.id, None)
            keep = {p.id for p in ports}
            for pid in [p for p in self.ports if self.ports[p].network_id == net.id]:
                if pid not in keep:
                    self.ports.pop(pid)
