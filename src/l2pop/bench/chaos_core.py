"""The state and plumbing shared by the chaos clients (``chaos_clients``): the model's
values, outcomes, problems, and a client's requests (``l2pop.client.Client`` calls) and
read-backs.

A call's outcome is what its answer says: the status the route answers on success (201 for
a create, 204 for a delete, 200 otherwise) is acknowledged, an ``ApiError`` below 500 refused,
and a 5xx or no answer at all (``Unreachable``: connection lost, timeout) indeterminate.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from l2pop.client import ApiError, Client, Unreachable
from l2pop.wire import NetworkOut, PortOut

T = TypeVar("T")

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


def port_of(port: PortOut) -> PortState:
    return PortState(
        id=port.id,
        network_id=port.network_id,
        name=port.name,
        mac=port.mac,
        fixed_ips=tuple(port.fixed_ips),
        host=port.host,
    )


def net_of(net: NetworkOut) -> NetState:
    return NetState(id=net.id, name=net.name, vni=net.vni)


def as_json(answer: BaseModel | None) -> Any:
    """An answer as the server's JSON, for problem reports (None stays None)."""
    return None if answer is None else answer.model_dump(mode="json")


def status_problem(port: PortOut, settled: bool = False) -> str | None:
    """Why a port's status does not fit its binding (None: it fits). ``settled``: every
    agent is up and has caught up, so a bound port must be ACTIVE."""
    status, host = port.status.value, port.host
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


class Gone:
    """A read-back's answer when the object does not exist (404)."""

    def __repr__(self) -> str:
        return "GONE"


GONE = Gone()


def ok_status(call: Callable[..., Any]) -> int:
    """The status the route of a ``Client`` method answers on success."""
    name = getattr(call, "__name__", "")
    return 201 if name.startswith("create_") else 204 if name.startswith("delete_") else 200


def describe(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``update_port('id', host='h1')``: a call as the history shows it."""
    given = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{getattr(call, '__name__', call)}({', '.join(given)})"


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
        self.api = Client(url, token, timeout=REQUEST_TIMEOUT_S)
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
        self, kind: str, target: str, call: Callable[..., T], *args: Any, **kwargs: Any
    ) -> tuple[Op, T | None]:
        """``call(*args, **kwargs)`` (a ``Client`` method), recorded as one operation; the
        answer when acknowledged."""
        t = time.monotonic()
        answer: T | None = None
        try:
            answer = call(*args, **kwargs)
        except ApiError as exc:
            outcome = INDETERMINATE if exc.status >= 500 else REFUSED
            op = Op(self.index, self.counter, kind, outcome, exc.status, t, target, str(exc)[:200])
        except Unreachable as exc:
            op = Op(self.index, self.counter, kind, INDETERMINATE, None, t, target, exc.kind)
        else:
            op = Op(self.index, self.counter, kind, ACK, ok_status(call), t, target)
        self.ops.append(op)
        self._note(target, f"{kind} {describe(call, args, kwargs)} -> {op.outcome} {op.status}")
        return op, answer

    def _read(self, call: Callable[[], T]) -> T | Gone | None:
        """``call()`` (one object's read) until the server answers something other than 5xx:
        the object, or ``GONE`` for a 404; None: gave up. Another refusal is a bug: raised."""
        deadline = time.monotonic() + RESOLVE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                return call()
            except ApiError as exc:
                if exc.status == 404:
                    return GONE
                if exc.status < 500:
                    raise
            except Unreachable:
                pass
            time.sleep(0.25)
        return None

    def _list(self, call: Callable[[], list[T]]) -> list[T] | None:
        """``call()`` (a list, every page) until it succeeds; None: gave up."""
        deadline = time.monotonic() + RESOLVE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                return call()
            except (ApiError, Unreachable):
                time.sleep(0.25)
        return None

    def _pick(self, bound: bool | None = None) -> PortState:
        ports = [p for p in self.ports.values() if bound is None or (p.host is not None) == bound]
        return self.rng.choice(ports)
