"""The state and plumbing shared by the chaos clients (``chaos_clients``): the model's
values, outcomes, problems, and a client's requests and read-backs."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from l2pop.testbed.process import list_all

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


class ClientCore:
    """A worker's model, records and requests; the operations are in the subclasses."""

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

    def _pick(self, bound: bool | None = None) -> PortState:
        ports = [p for p in self.ports.values() if bound is None or (p.host is not None) == bound]
        return self.rng.choice(ports)
