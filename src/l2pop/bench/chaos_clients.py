"""The client workers of ``l2pop bench chaos``: random REST writes against a model.

Each worker owns its networks and ports (names ``c<i>-...``, its own VNI, MAC and IP
ranges), so what the store must hold for it is well defined: the worker's model. Every
operation ends in one of three outcomes:

* **acknowledged** (2xx): the write happened; the model takes it, and the answer must say
  what was asked.
* **refused** (4xx): nothing may have changed; read back at once, and every object a refused
  create named must be absent at the end.
* **indeterminate** (transport error, timeout, 5xx): either outcome is allowed. The worker
  reads the object back (retrying through the outage) before its next operation, and the
  model takes whichever it finds: before or after. Anything else is a problem.

Deliberate conflicts (duplicate MAC or IP in a network, duplicate VNI, delete of a network
that still has ports, MAC change of an ACTIVE port) must be refused with 409.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import Any

from l2pop.bench.chaos_conflicts import ConflictOps
from l2pop.bench.chaos_core import (
    ACK,
    INDETERMINATE,
    MAX_NETWORKS,
    MAX_PORTS,
    REFUSED,
    Gone,
    NetState,
    Op,
    PortState,
    Problem,
    as_json,
    net_of,
    port_of,
    status_problem,
)
from l2pop.model.validation import parse_fixed_ips
from l2pop.wire import NetworkOut, PortOut

__all__ = [
    "ACK",
    "INDETERMINATE",
    "REFUSED",
    "ChaosClient",
    "Problem",
    "net_of",
    "port_of",
    "status_problem",
]


class ChaosClient(ConflictOps):
    """One worker thread's operations (call ``run`` in the thread)."""

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
                if self.think > 0:
                    time.sleep(self.rng.uniform(0, 2 * self.think))
        except Exception as exc:  # a bug in the worker must not pass for a clean run
            self.error = f"{type(exc).__name__}: {exc}"
            self._problem("client_crashed", f"client{self.index}", self.error)
        finally:
            self.api.close()

    def step(self) -> None:
        ports = list(self.ports.values())
        unbound = [p for p in ports if p.host is None]
        bound = [p for p in ports if p.host is not None]
        used = Counter(p.network_id for p in ports)
        empty = [n for n in self.nets if not used[n]]
        busy = [n for n in self.nets if used[n]]
        with_ips = [p for p in ports if p.fixed_ips]
        pairs = [n for n in busy if sum(1 for p in with_ips if p.network_id == n) >= 2]
        menu: list[tuple[float, Any]] = []
        if len(self.nets) < MAX_NETWORKS:
            menu.append((6.0 if not self.nets else 1.5, self.create_network))
        if self.nets and len(ports) < MAX_PORTS:
            menu.append((5.0, self.create_port))
        if unbound:
            menu += [(3.0, self.bind), (1.0, self.change_mac)]
        if bound:
            menu += [(2.0, self.migrate), (2.0, self.unbind), (1.0, self.mac_change_active)]
        if ports:
            menu += [(2.0, self.change_ips), (1.5, self.rename_port)]
            menu.append((4.0 if len(ports) >= MAX_PORTS else 1.5, self.delete_port))
            menu += [(0.7, self.dup_mac), (0.7, self.dup_ip)]
        if self.nets:
            menu += [(0.7, self.rename_network), (0.7, self.dup_vni)]
        if empty:
            menu.append((1.0, self.delete_network))
        if busy:
            menu.append((0.7, self.delete_nonempty_network))
        if pairs:
            menu.append((0.7, self.dup_ip_update))
        total = sum(w for w, _ in menu)
        pick = self.rng.uniform(0, total)
        for weight, fn in menu:
            pick -= weight
            if pick <= 0:
                fn()
                return
        menu[-1][1]()

    # -- networks -----------------------------------------------------------------------

    def create_network(self) -> None:
        name, vni = self._name("n"), self._vni()
        op, r = self._send("create_network", name, self.api.create_network, name=name, vni=vni)
        if op.outcome == ACK and r is not None:
            net = net_of(r)
            self._note(net.id, f"created as {name}")
            self.history[net.id] = self.history.pop(name, []) + self.history.get(net.id, [])
            if (net.name, net.vni) != (name, vni):
                got = r.model_dump_json()[:200]
                self._problem("wrong_answer", net.id, f"asked {name}/{vni}, got {got}")
            self.nets[net.id] = NetState(net.id, name, vni)
        elif op.outcome == REFUSED:
            self.refused_names.add(name)
            self._problem("unexpected_refusal", name, f"create_network {op.status} {op.detail}")
        else:
            found = self._list(self.api.networks)
            if found is None:
                self._problem("unresolved", name, "create_network: no read-back")
                return
            mine = [n for n in found if n.name == name]
            if not mine:
                op.resolved = "before"
                self.refused_names.add(name)  # must never appear later
            elif len(mine) == 1 and mine[0].vni == vni:
                op.resolved = "after"
                self.nets[mine[0].id] = NetState(mine[0].id, name, vni)
            else:
                found_text = [as_json(n) for n in mine]
                self._problem("indeterminate_neither", name, f"create_network found {found_text}")

    def rename_network(self) -> None:
        net = self.rng.choice(list(self.nets.values()))
        after = replace(net, name=self._name("n"))
        op, r = self._send(
            "rename_network", net.id, self.api.update_network, net.id, name=after.name
        )
        self._settle_network(op, net, after, r)

    def delete_network(self) -> None:
        used = {p.network_id for p in self.ports.values()}
        net = self.rng.choice([n for n in self.nets.values() if n.id not in used])
        op, _ = self._send("delete_network", net.id, self.api.delete_network, net.id)
        self._settle_network(op, net, None, None)

    def _settle_network(
        self, op: Op, before: NetState, after: NetState | None, r: NetworkOut | None
    ) -> None:
        if op.outcome == ACK:
            if after is None:
                del self.nets[before.id]
                self.deleted.add(before.id)
                return
            if r is not None and net_of(r) != after:
                answered = r.model_dump_json()[:200]
                self._problem("wrong_answer", before.id, f"{op.kind}: answered {answered}")
            self.nets[before.id] = after
            return
        got = self._read(lambda: self.api.network(before.id))
        if got is None:
            self._problem("unresolved", before.id, f"{op.kind}: no read-back")
            return
        seen = None if isinstance(got, Gone) else net_of(got)
        if op.outcome == REFUSED:
            self._problem("unexpected_refusal", before.id, f"{op.kind} {op.status} {op.detail}")
            if seen is None:
                self._problem("lost_write", before.id, f"{op.kind}: the network is gone")
            elif seen != before:
                self._problem("refused_changed", before.id, f"{op.kind}: now {seen}")
            self._adopt_network(before, seen)
            return
        if seen == before:
            op.resolved = "before"
        elif seen == after:
            op.resolved = "after"
        else:
            self._problem("indeterminate_neither", before.id, f"{op.kind}: found {seen}")
        self._adopt_network(before, seen)

    def _adopt_network(self, before: NetState, seen: NetState | None) -> None:
        if seen is None:
            self.nets.pop(before.id, None)
            self.deleted.add(before.id)
        else:
            self.nets[before.id] = seen

    # -- ports --------------------------------------------------------------------------

    def create_port(self) -> None:
        net = self.rng.choice(list(self.nets))
        host = self.rng.choice(self.hosts) if self.rng.random() < 0.5 else None
        name, mac, ips = self._name("p"), self._mac(), self._ips()
        want = PortState("", net, name, mac, parse_fixed_ips(ips), host)
        op, r = self._send(
            "create_port",
            name,
            self.api.create_port,
            net,
            name=name,
            mac=mac,
            fixed_ips=ips,
            host=host,
        )
        if op.outcome == ACK and r is not None:
            got = port_of(r)
            self.history[got.id] = self.history.pop(name, [])
            if replace(got, id="") != want or status_problem(r):
                answered = r.model_dump_json()[:300]
                self._problem("wrong_answer", got.id, f"create_port answered {answered}")
            self.ports[got.id] = replace(want, id=got.id)
            return
        if op.outcome == REFUSED:
            self.refused_names.add(name)
            self._problem("unexpected_refusal", name, f"create_port {op.status} {op.detail}")
            return
        found = self._list(lambda: self.api.ports(network_id=net))
        if found is None:
            self._problem("unresolved", name, "create_port: no read-back")
            return
        mine = [p for p in found if p.name == name]
        if not mine:
            op.resolved = "before"
            self.refused_names.add(name)
        elif len(mine) == 1 and replace(port_of(mine[0]), id="") == want:
            op.resolved = "after"
            self.ports[mine[0].id] = port_of(mine[0])
            self.history[mine[0].id] = self.history.pop(name, [])
        else:
            found_text = [as_json(p) for p in mine]
            self._problem("indeterminate_neither", name, f"create_port found {found_text}")
            for p in mine:
                self.ports[p.id] = port_of(p)

    def _patch(self, kind: str, port: PortState, changes: dict[str, Any], after: PortState) -> None:
        """``update_port`` with ``changes`` (its keyword arguments)."""
        op, r = self._send(kind, port.id, self.api.update_port, port.id, **changes)
        self._settle_port(op, port, after, r)

    def bind(self) -> None:
        port = self._pick(bound=False)
        host = self.rng.choice(self.hosts)
        self._patch("bind", port, {"host": host}, replace(port, host=host))

    def migrate(self) -> None:
        port = self._pick(bound=True)
        others = [h for h in self.hosts if h != port.host] or self.hosts
        host = self.rng.choice(others)
        self._patch("migrate", port, {"host": host}, replace(port, host=host))

    def unbind(self) -> None:
        port = self._pick(bound=True)
        self._patch("unbind", port, {"host": None}, replace(port, host=None))

    def change_ips(self) -> None:
        port = self._pick()
        ips = self._ips(self.rng.randint(0, 2))
        self._patch(
            "change_ips", port, {"fixed_ips": ips}, replace(port, fixed_ips=parse_fixed_ips(ips))
        )

    def rename_port(self) -> None:
        port = self._pick()
        name = self._name("p")
        self._patch("rename_port", port, {"name": name}, replace(port, name=name))

    def change_mac(self) -> None:
        port = self._pick(bound=False)  # DOWN: a MAC change must be accepted
        mac = self._mac()
        self._patch("change_mac", port, {"mac": mac}, replace(port, mac=mac))

    def delete_port(self) -> None:
        port = self._pick()
        op, _ = self._send("delete_port", port.id, self.api.delete_port, port.id)
        self._settle_port(op, port, None, None)

    def _settle_port(
        self, op: Op, before: PortState, after: PortState | None, r: PortOut | None
    ) -> None:
        if op.outcome == ACK:
            if after is None:
                del self.ports[before.id]
                self.deleted.add(before.id)
                return
            if r is not None:
                if port_of(r) != after:
                    answered = r.model_dump_json()[:300]
                    self._problem("wrong_answer", before.id, f"{op.kind} answered {answered}")
                elif why := status_problem(r):
                    self._problem("status", before.id, f"{op.kind} answered {why}")
                elif before.host != after.host and after.host and r.status != "BUILD":
                    self._problem("status", before.id, f"{op.kind}: {r.status}, not BUILD")
            self.ports[before.id] = after
            return
        got = self._read(lambda: self.api.port(before.id))
        if got is None:
            self._problem("unresolved", before.id, f"{op.kind}: no read-back")
            return
        seen = None if isinstance(got, Gone) else port_of(got)
        if not isinstance(got, Gone) and (why := status_problem(got)):
            self._problem("status", before.id, f"after {op.kind}: {why}")
        if op.outcome == REFUSED:
            self._problem("unexpected_refusal", before.id, f"{op.kind} {op.status} {op.detail}")
            if seen is None:
                self._problem("lost_write", before.id, f"{op.kind}: the port is gone")
            elif seen != before:
                self._problem("refused_changed", before.id, f"{op.kind}: now {seen}")
        elif seen == before:
            op.resolved = "before"
        elif seen == after:
            op.resolved = "after"
        else:
            self._problem("indeterminate_neither", before.id, f"{op.kind}: found {seen}")
        if seen is None:
            self.ports.pop(before.id, None)
            self.deleted.add(before.id)
        else:
            self.ports[before.id] = seen
