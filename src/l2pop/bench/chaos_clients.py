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

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from l2pop.model.validation import parse_fixed_ips

ACK, REFUSED, INDETERMINATE = "acknowledged", "refused", "indeterminate"
MAX_NETWORKS = 4  # per client
MAX_PORTS = 16  # per client
REQUEST_TIMEOUT_S = 30.0
RESOLVE_TIMEOUT_S = 180.0  # how long a read-back may wait for the server to come back


@dataclass(frozen=True)
class NetState:
    id: str
    name: str
    vni: int


@dataclass(frozen=True)
class PortState:
    id: str
    network_id: str
    name: str
    mac: str
    fixed_ips: tuple[str, ...]
    host: str | None


def port_of(body: dict[str, Any]) -> PortState:
    return PortState(
        id=str(body["id"]),
        network_id=str(body["network_id"]),
        name=str(body["name"]),
        mac=str(body["mac"]),
        fixed_ips=tuple(body["fixed_ips"]),
        host=body.get("host"),
    )


def net_of(body: dict[str, Any]) -> NetState:
    return NetState(id=str(body["id"]), name=str(body["name"]), vni=int(body["vni"]))


def status_problem(body: dict[str, Any], settled: bool = False) -> str | None:
    """Why a port's status does not fit its binding (None: it fits). ``settled``: every
    agent is up and has caught up, so a bound port must be ACTIVE."""
    status, host = body.get("status"), body.get("host")
    if host is None and status != "DOWN":
        return f"unbound but {status}"
    if host is not None and status not in ("BUILD", "ACTIVE"):
        return f"bound to {host} but {status}"
    if settled and host is not None and status != "ACTIVE":
        return f"bound to {host} but still {status} after convergence"
    return None


def list_all(http: httpx.Client, path: str, params: dict[str, str] | None = None) -> list[Any]:
    """Every item of a list endpoint, following ``Link: <...>; rel="next"`` pages.
    Raises on any failure (transport or HTTP)."""
    items: list[Any] = []
    url: str | None = path
    query: dict[str, str] | None = params
    pages = 0
    while url is not None:
        r = http.get(url, params=query)
        r.raise_for_status()
        items.extend(r.json())
        nxt = r.links.get("next", {}).get("url")
        url, query = (str(nxt), None) if nxt else (None, None)
        pages += 1
        if pages > 10_000:
            raise RuntimeError(f"{path}: more than 10000 pages; a Link loop?")
    return items


@dataclass
class Op:
    client: int
    seq: int
    kind: str
    outcome: str
    status: int | None
    t: float
    target: str
    detail: str = ""
    resolved: str | None = None  # for indeterminate: "before" | "after"


@dataclass
class Problem:
    check: str  # lost_write | leftover | refused_changed | conflict_accepted | ...
    client: int
    target: str
    detail: str
    history: list[str] = field(default_factory=list)


class ChaosClient:
    """One worker thread's state and operations (call ``run`` in the thread)."""

    def __init__(
        self,
        index: int,
        url: str,
        token: str,
        hosts: list[str],
        *,
        seed: int,
        think: float,
        stop: threading.Event,
    ) -> None:
        self.index = index
        self.hosts = hosts
        self.rng = random.Random(seed)
        self.think = think
        self.stop = stop
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0),
        )
        self.nets: dict[str, NetState] = {}
        self.ports: dict[str, PortState] = {}
        self.deleted: set[str] = set()  # ids whose delete was acknowledged / resolved done
        self.refused_names: set[str] = set()  # names refused creates used
        self.ops: list[Op] = []
        self.problems: list[Problem] = []
        self.history: dict[str, list[str]] = {}  # object id or name -> what was done to it
        self.counter = 0
        self.started = time.monotonic()
        self.error: str | None = None

    # -- plumbing -----------------------------------------------------------------------

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _name(self, kind: str) -> str:
        return f"c{self.index}-{kind}{self._next()}"

    def _mac(self) -> str:
        s = self._next()
        return f"02:cc:{self.index & 255:02x}:{s >> 16 & 255:02x}:{s >> 8 & 255:02x}:{s & 255:02x}"

    def _ip(self) -> str:
        s = self._next()
        if self.rng.random() < 0.2:
            return f"fd00:cc:{self.index:x}::{s:x}"
        return f"10.{self.index % 250}.{s // 250 % 250}.{s % 250 + 1}"

    def _vni(self) -> int:
        return 100_000 + self.index * 100_000 + self._next()

    def _ips(self, n: int | None = None) -> list[str]:
        return [self._ip() for _ in range(n if n is not None else self.rng.randint(1, 2))]

    def _note(self, key: str, text: str) -> None:
        self.history.setdefault(key, []).append(f"{time.monotonic() - self.started:.2f}s {text}")

    def _problem(self, check: str, target: str, detail: str) -> None:
        self.problems.append(
            Problem(check, self.index, target, detail, list(self.history.get(target, [])))
        )

    def _send(
        self, kind: str, target: str, method: str, path: str, body: Any = None
    ) -> tuple[Op, httpx.Response | None]:
        t = time.monotonic()
        response: httpx.Response | None = None
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            op = Op(
                self.index, self.counter, kind, INDETERMINATE, None, t, target, type(exc).__name__
            )
        else:
            code = response.status_code
            if code < 300:
                outcome = ACK
            elif code >= 500:
                outcome = INDETERMINATE
            else:
                outcome = REFUSED
            detail = "" if code < 300 else response.text[:200]
            op = Op(self.index, self.counter, kind, outcome, code, t, target, detail)
        self.ops.append(op)
        self._note(target, f"{kind} {method} {path} {body} -> {op.outcome} {op.status}")
        return op, response

    def _read(self, path: str, params: dict[str, str] | None = None) -> httpx.Response | None:
        """GET ``path`` until the server answers something other than 5xx (None: gave up)."""
        deadline = time.monotonic() + RESOLVE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                r = self.http.get(path, params=params)
                if r.status_code < 500:
                    return r
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        return None

    def _list(self, path: str, params: dict[str, str] | None = None) -> list[Any] | None:
        deadline = time.monotonic() + RESOLVE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                return list_all(self.http, path, params)
            except (httpx.TransportError, httpx.HTTPStatusError):
                time.sleep(0.25)
        return None

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
            self.http.close()

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
        op, r = self._send(
            "create_network", name, "POST", "/v1/networks", {"name": name, "vni": vni}
        )
        if op.outcome == ACK and r is not None:
            net = net_of(r.json())
            self._note(net.id, f"created as {name}")
            self.history[net.id] = self.history.pop(name, []) + self.history.get(net.id, [])
            if (net.name, net.vni) != (name, vni):
                self._problem("wrong_answer", net.id, f"asked {name}/{vni}, got {r.text[:200]}")
            self.nets[net.id] = NetState(net.id, name, vni)
        elif op.outcome == REFUSED:
            self.refused_names.add(name)
            self._problem("unexpected_refusal", name, f"create_network {op.status} {op.detail}")
        else:
            found = self._list("/v1/networks")
            if found is None:
                self._problem("unresolved", name, "create_network: no read-back")
                return
            mine = [n for n in found if n["name"] == name]
            if not mine:
                op.resolved = "before"
                self.refused_names.add(name)  # must never appear later
            elif len(mine) == 1 and mine[0]["vni"] == vni:
                op.resolved = "after"
                self.nets[mine[0]["id"]] = NetState(mine[0]["id"], name, vni)
            else:
                self._problem("indeterminate_neither", name, f"create_network found {mine}")

    def rename_network(self) -> None:
        net = self.rng.choice(list(self.nets.values()))
        after = replace(net, name=self._name("n"))
        op, r = self._send(
            "rename_network", net.id, "PATCH", f"/v1/networks/{net.id}", {"name": after.name}
        )
        self._settle_network(op, net, after, r)

    def delete_network(self) -> None:
        used = {p.network_id for p in self.ports.values()}
        net = self.rng.choice([n for n in self.nets.values() if n.id not in used])
        op, _ = self._send("delete_network", net.id, "DELETE", f"/v1/networks/{net.id}")
        self._settle_network(op, net, None, None)

    def _settle_network(
        self, op: Op, before: NetState, after: NetState | None, r: httpx.Response | None
    ) -> None:
        if op.outcome == ACK:
            if after is None:
                del self.nets[before.id]
                self.deleted.add(before.id)
                return
            if r is not None and net_of(r.json()) != after:
                self._problem("wrong_answer", before.id, f"{op.kind}: answered {r.text[:200]}")
            self.nets[before.id] = after
            return
        got = self._read(f"/v1/networks/{before.id}")
        if got is None:
            self._problem("unresolved", before.id, f"{op.kind}: no read-back")
            return
        seen = None if got.status_code == 404 else net_of(got.json())
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
        body = {"network_id": net, "name": name, "mac": mac, "fixed_ips": ips, "host": host}
        want = PortState("", net, name, mac, parse_fixed_ips(ips), host)
        op, r = self._send("create_port", name, "POST", "/v1/ports", body)
        if op.outcome == ACK and r is not None:
            got = port_of(r.json())
            self.history[got.id] = self.history.pop(name, [])
            if replace(got, id="") != want or status_problem(r.json()):
                self._problem("wrong_answer", got.id, f"create_port answered {r.text[:300]}")
            self.ports[got.id] = replace(want, id=got.id)
            return
        if op.outcome == REFUSED:
            self.refused_names.add(name)
            self._problem("unexpected_refusal", name, f"create_port {op.status} {op.detail}")
            return
        found = self._list("/v1/ports", {"network_id": net})
        if found is None:
            self._problem("unresolved", name, "create_port: no read-back")
            return
        mine = [p for p in found if p["name"] == name]
        if not mine:
            op.resolved = "before"
            self.refused_names.add(name)
        elif len(mine) == 1 and replace(port_of(mine[0]), id="") == want:
            op.resolved = "after"
            self.ports[mine[0]["id"]] = port_of(mine[0])
            self.history[mine[0]["id"]] = self.history.pop(name, [])
        else:
            self._problem("indeterminate_neither", name, f"create_port found {mine}")
            for p in mine:
                self.ports[p["id"]] = port_of(p)

    def _pick(self, bound: bool | None = None) -> PortState:
        ports = [p for p in self.ports.values() if bound is None or (p.host is not None) == bound]
        return self.rng.choice(ports)

    def _patch(self, kind: str, port: PortState, body: dict[str, Any], after: PortState) -> None:
        op, r = self._send(kind, port.id, "PATCH", f"/v1/ports/{port.id}", body)
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
        op, r = self._send("delete_port", port.id, "DELETE", f"/v1/ports/{port.id}")
        self._settle_port(op, port, None, r)

    def _settle_port(
        self, op: Op, before: PortState, after: PortState | None, r: httpx.Response | None
    ) -> None:
        if op.outcome == ACK:
            if after is None:
                del self.ports[before.id]
                self.deleted.add(before.id)
                return
            if r is not None:
                body = r.json()
                if port_of(body) != after:
                    self._problem("wrong_answer", before.id, f"{op.kind} answered {r.text[:300]}")
                elif why := status_problem(body):
                    self._problem("status", before.id, f"{op.kind} answered {why}")
                elif before.host != after.host and after.host and body["status"] != "BUILD":
                    self._problem("status", before.id, f"{op.kind}: {body['status']}, not BUILD")
            self.ports[before.id] = after
            return
        got = self._read(f"/v1/ports/{before.id}")
        if got is None:
            self._problem("unresolved", before.id, f"{op.kind}: no read-back")
            return
        seen = None if got.status_code == 404 else port_of(got.json())
        if seen is not None and (why := status_problem(got.json())):
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

    # -- deliberate conflicts: must be refused with 409 and leave nothing ----------------

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
