"""Deliberate conflicts of the chaos clients: each must be refused with 409, and leave
nothing (read back at once; a refused create's name must never appear)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from l2pop.bench.chaos_core import (
    ACK,
    INDETERMINATE,
    REFUSED,
    ClientCore,
    NetState,
    Op,
    PortState,
    port_of,
)


class ConflictOps(ClientCore):
    def _conflict_create(self, kind: str, path: str, body: dict[str, Any], lister: Any) -> None:
        name = body["name"]
        self.refused_names.add(name)  # whatever happens, nothing may carry this name
        op, r = self._send(kind, name, "POST", path, body)
        if op.outcome == ACK and r is not None:
            self._problem("conflict_accepted", name, f"{kind}: {r.status_code} {r.text[:300]}")
        elif op.outcome == REFUSED and op.status != 409:
            self._problem("conflict_status", name, f"{kind}: {op.status}, not 409: {op.detail}")
        found = lister()
        if found is None:
            self._problem("unresolved", name, f"{kind}: no read-back")
            return
        if op.outcome == INDETERMINATE:
            op.resolved = "before" if not any(x["name"] == name for x in found) else None
        if any(x["name"] == name for x in found):
            self._problem("leftover", name, f"{kind}: {[x for x in found if x['name'] == name]}")

    def dup_mac(self) -> None:
        other = self._pick()
        body: dict[str, Any] = {"network_id": other.network_id, "name": self._name("x")}
        body["mac"], body["fixed_ips"] = other.mac, self._ips(1)
        body["host"] = self.rng.choice([None, *self.hosts])
        self._conflict_create(
            "conflict_dup_mac",
            "/v1/ports",
            body,
            lambda: self._list("/v1/ports", {"network_id": other.network_id}),
        )

    def dup_ip(self) -> None:
        with_ips = [p for p in self.ports.values() if p.fixed_ips]
        if not with_ips:
            return
        other = self.rng.choice(with_ips)
        ip = self.rng.choice(other.fixed_ips)
        body: dict[str, Any] = {"network_id": other.network_id, "name": self._name("x")}
        body["mac"], body["fixed_ips"] = self._mac(), [ip, *self._ips(self.rng.randint(0, 1))]
        self._conflict_create(
            "conflict_dup_ip",
            "/v1/ports",
            body,
            lambda: self._list("/v1/ports", {"network_id": other.network_id}),
        )

    def dup_vni(self) -> None:
        other = self.rng.choice(list(self.nets.values()))
        body = {"name": self._name("x"), "vni": other.vni}
        self._conflict_create(
            "conflict_dup_vni", "/v1/networks", body, lambda: self._list("/v1/networks")
        )

    def _conflict_update(
        self, kind: str, target: str, request: tuple[str, str, Any], check: Any
    ) -> None:
        method, path, body = request
        op, r = self._send(kind, target, method, path, body)
        if op.outcome == ACK:
            self._problem(
                "conflict_accepted", target, f"{kind}: {op.status} {r.text[:300] if r else ''}"
            )
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
        request = ("PATCH", f"/v1/ports/{port.id}", {"fixed_ips": ips})
        self._conflict_update(
            "conflict_dup_ip_update", port.id, request, lambda op: self._unchanged_port(op, port)
        )

    def mac_change_active(self) -> None:
        port = self._pick(bound=True)
        got = self._read(f"/v1/ports/{port.id}")
        if got is None or got.status_code != 200 or got.json()["status"] != "ACTIVE":
            return  # not ACTIVE (yet): nothing to provoke
        request = ("PATCH", f"/v1/ports/{port.id}", {"mac": self._mac()})
        self._conflict_update(
            "conflict_mac_change_active",
            port.id,
            request,
            lambda op: self._unchanged_port(op, port),
        )

    def delete_nonempty_network(self) -> None:
        used = {p.network_id for p in self.ports.values()}
        net = self.rng.choice([n for n in self.nets.values() if n.id in used])
        request = ("DELETE", f"/v1/networks/{net.id}", None)
        self._conflict_update(
            "conflict_delete_nonempty", net.id, request, lambda op: self._unchanged_network(op, net)
        )

    def _unchanged_port(self, op: Op, port: PortState) -> None:
        got = self._read(f"/v1/ports/{port.id}")
        if got is None:
            self._problem("unresolved", port.id, f"{op.kind}: no read-back")
            return
        seen = None if got.status_code == 404 else port_of(got.json())
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
        got = self._read(f"/v1/networks/{net.id}")
        ports = self._list("/v1/ports", {"network_id": net.id})
        if got is None or ports is None:
            self._problem("unresolved", net.id, f"{op.kind}: no read-back")
            return
        want = {p.id for p in self.ports.values() if p.network_id == net.id}
        if got.status_code == 404 or {p["id"] for p in ports} != want:
            check = "leftover" if op.outcome != ACK else "conflict_accepted"
            self._problem(check, net.id, f"{op.kind} ({op.outcome}): network {got.status_code}")
            if op.outcome == INDETERMINATE:
                op.resolved = None
            if got.status_code == 404:
                self.nets.pop(net.id, None)
            keep = {p["id"] for p in ports}
            for pid in [p for p in self.ports if self.ports[p].network_id == net.id]:
                if pid not in keep:
                    self.ports.pop(pid)
