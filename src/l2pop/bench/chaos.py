"""``l2pop bench chaos``: a soak under random ``kill -9`` that proves nothing is lost.

A real ``l2pop server`` process (SQLite file or a throwaway PostgreSQL), one real agent
process per host (memory datapath, each with its control endpoint) and client worker threads
(``chaos_clients``) that drive random writes, deliberate conflicts included, for
``duration`` seconds. Meanwhile a killer ``kill -9``s, by pid, at reproducible random intervals:
the server (restarted on the same port and database), an agent (restarted), and on
PostgreSQL the postmaster (restarted on the same data directory; the server either survives
the outage or is restarted, and the result says which). After each kill it measures the
time from the kill until every host is connected and in sync again.

At the end the chaos stops, the system must converge (bounded) and then:

(a) every acknowledged write is in the store: each client's model equals what the API
    reads back, field by field (name, MAC, fixed IPs, host; unbound => DOWN, bound => ACTIVE);
(b) no refused write left anything (no object carries a refused create's name; refused
    updates were read back unchanged);
(c) each indeterminate write resolved to its before or its after state;
(d) every agent's tables (read back from its control endpoint) equal its desired state
    (``Client.host_fdb``) exactly;
(e) every host is ``connected`` and ``in_sync``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from l2pop.bench.chaos_clients import (
    ACK,
    INDETERMINATE,
    REFUSED,
    ChaosClient,
    Problem,
    net_of,
    port_of,
    status_problem,
)
from l2pop.bench.chaos_core import as_json
from l2pop.bench.scale import percentile
from l2pop.client import Client, ClientError
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.process import ServerProcess
from l2pop.wire import HostOut

Progress = Callable[[str], None]
HEARTBEAT_S = 1.0
SERVER_SURVIVAL_S = 30.0  # after a database restart, the server must serve again by then
OUTCOMES = (ACK, REFUSED, INDETERMINATE)


@dataclass
class ChaosConfig:
    duration: float = 60.0
    engine: str = "sqlite"  # or "postgresql"
    agents: int = 4
    clients: int = 4
    seed: int = 1
    kill_min: float = 3.0  # seconds between the end of one recovery and the next kill
    kill_max: float = 15.0
    converge_timeout: float = 60.0
    think: float = 0.2  # mean pause between one client's operations


class Bed:
    """The processes under test; every kill is by the pid we started."""

    def __init__(self, cfg: ChaosConfig, workdir: Path, progress: Progress) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.progress = progress
        self.pg: Any = None
        if cfg.engine == "postgresql":
            from l2pop.testbed.postgres import ThrowawayPostgres

            self.pg = ThrowawayPostgres(durable_commits=True).start()
            url = self.pg.create_database("l2pop_chaos")
        else:
            db = workdir / "chaos.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            url = f"sqlite:///{db}"
        self.server = ServerProcess(
            url,
            log_path=workdir / "server.log",
            extra_args=("--heartbeat-interval", str(HEARTBEAT_S)),
        )
        self.swarms: dict[str, AgentSwarm] = {}
        self.hosts: list[str] = []

    def api(self, timeout: float = 30.0) -> Client:
        """The operator's client of the server (no admin token: a loopback caller is)."""
        return Client(
            self.server.url, self.server.admin_token, timeout=timeout, verify=self.server.verify
        )

    def start(self) -> None:
        self.server.start(timeout=60)
        with self.api() as api:
            for i in range(1, self.cfg.agents + 1):
                name = f"h{i}"
                made = api.create_host(name, f"192.0.2.{i}")
                cred = HostCredentials(name, f"192.0.2.{i}", made.token)
                swarm = AgentSwarm(
                    self.server.url,
                    [cred],
                    self.workdir,
                    name=f"agent-{name}",
                    test_hooks=False,
                    heartbeat_interval=HEARTBEAT_S,
                )
                self.swarms[name] = swarm.start(timeout=60)
                self.hosts.append(name)

    def stop(self) -> None:
        for swarm in self.swarms.values():
            swarm.stop()
        self.server.stop()
        if self.pg is not None:
            self.pg.stop()


def hosts_settled(api: Client) -> tuple[bool, list[str]]:
    """(every host connected and in sync, the hosts that are not)."""
    bad = [h.name for h in api.hosts() if not (h.connected and h.in_sync)]
    return not bad, bad


def wait_settled(api: Client, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until every host is connected and in sync (None: timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if hosts_settled(api)[0]:
                return time.monotonic() - since
        except ClientError:
            pass
        time.sleep(0.1)
    return None


def _pid_gone(pid: int, timeout: float = 15.0) -> None:
    """Until ``pid`` is gone or a zombie (the postmaster's parent is init, which reaps it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)


class Killer(threading.Thread):
    """``kill -9`` a random target at reproducible random intervals; restart it; measure."""

    def __init__(self, bed: Bed, rng: random.Random, stop: threading.Event, t0: float) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.bed = bed
        self.rng = rng
        self.stop = stop
        self.t0 = t0
        self.kills: list[dict[str, Any]] = []
        self.problems: list[Problem] = []
        self.api = bed.api(timeout=10.0)

    def targets(self) -> list[str]:
        return ["server", "agent", "postgres"] if self.bed.pg is not None else ["server", "agent"]

    def run(self) -> None:
        cfg = self.bed.cfg
        try:
            while not self.stop.wait(self.rng.uniform(cfg.kill_min, cfg.kill_max)):
                self.kill(self.rng.choice(self.targets()))
        except Exception as exc:
            self.problems.append(
                Problem("killer_failed", -1, "killer", f"{type(exc).__name__}: {exc}")
            )
        finally:
            self.api.close()

    def _restart_server(self) -> None:
        """Start the server again on its port and database; keep trying for a while (a
        restart that fails is recorded, then retried)."""
        deadline = time.monotonic() + 180
        while True:
            try:
                self.bed.server.restart(timeout=60)
                return
            except (RuntimeError, TimeoutError) as exc:
                self.bed.server.kill()
                self.problems.append(Problem("server_restart_failed", -1, "server", str(exc)))
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def kill(self, target: str) -> None:
        bed = self.bed
        event: dict[str, Any] = {"target": target, "at_s": round(time.monotonic() - self.t0, 2)}
        t = time.monotonic()
        if target == "server":
            event["pid"] = bed.server.pid
            bed.server.kill()
            t = time.monotonic()
            self._restart_server()
        elif target == "agent":
            host = self.rng.choice(bed.hosts)
            swarm = bed.swarms[host]
            event["host"], event["pid"] = host, swarm.pid
            swarm.kill()
            t = time.monotonic()
            swarm.start(timeout=60)
        else:
            pid = bed.pg.kill_postmaster()
            t = time.monotonic()
            event["pid"] = pid
            if pid is not None:
                _pid_gone(pid)
            event["db_restart_s"] = round(bed.pg.restart(timeout=120), 2)
            event["server"] = self._server_after_db_restart()
        event["restart_s"] = round(time.monotonic() - t, 2)
        converged = wait_settled(self.api, t, self.bed.cfg.converge_timeout)
        event["converge_s"] = None if converged is None else round(converged, 2)
        if converged is None:
            why = f"not in sync {bed.cfg.converge_timeout}s after the kill at {event['at_s']}s"
            self.problems.append(Problem("no_convergence", -1, target, why))
            # go on with the soak: a fresh server, and it must converge from there
            bed.server.kill()
            self._restart_server()
            again = wait_settled(self.api, time.monotonic(), bed.cfg.converge_timeout)
            event["recovery_restart_converge_s"] = None if again is None else round(again, 2)
        self.kills.append(event)
        who = f"{event.get('pid')} {event.get('host', '')}".strip()
        server = f", server {event['server']}" if "server" in event else ""
        self.bed.progress(
            f"kill -9 {target} ({who}): back in {event['restart_s']} s, "
            f"in sync after {event['converge_s']} s{server}"
        )

    def _server_after_db_restart(self) -> str:
        """``survived``: the same server process serves reads again within
        SERVER_SURVIVAL_S; else it is killed and restarted: ``restarted``."""
        deadline = time.monotonic() + SERVER_SURVIVAL_S
        server = self.bed.server
        while time.monotonic() < deadline:
            if server.proc is None or server.proc.poll() is not None:
                break  # it exited by itself
            try:
                self.api.hosts()
                self.api.networks()
                return "survived"
            except ClientError:
                pass
            time.sleep(0.2)
        exited = server.proc is not None and server.proc.poll() is not None
        server.kill()
        self._restart_server()
        return "restarted (it had exited)" if exited else "restarted"


# -- the end: converge, then verify ---------------------------------------------------------


def agent_mismatches(api: Client, bed: Bed) -> dict[str, str]:
    out = {}
    for host, swarm in bed.swarms.items():
        try:
            desired = as_json(api.host_fdb(host))
            actual = swarm.tables(host)
        except (ClientError, httpx.HTTPError, ValueError) as exc:
            out[host] = f"unreadable: {exc}"
            continue
        if actual["networks"] != desired["networks"]:
            out[host] = "tables differ from /fdb"
        elif actual["digest"] != desired["digest"]:
            out[host] = "digest differs from /fdb"
    return out


def final_convergence(api: Client, bed: Bed, timeout: float) -> dict[str, Any]:
    """Wait until hosts are settled, no port is BUILD and every agent equals its /fdb."""
    start = time.monotonic()
    state: dict[str, Any] = {}
    while True:
        try:
            settled, lagging = hosts_settled(api)
            build = [p.id for p in api.ports(status="BUILD")]
            wrong = agent_mismatches(api, bed) if settled and not build else {}
            state = {"hosts_not_in_sync": lagging, "ports_build": build, "agents_wrong": wrong}
            if settled and not build and not wrong:
                state["converge_s"] = round(time.monotonic() - start, 2)
                return state
        except ClientError as exc:
            state = {"error": str(exc)}
        if time.monotonic() - start > timeout:
            state["converge_s"] = None
            if "agents_wrong" in state and not state["agents_wrong"]:
                state["agents_wrong"] = agent_mismatches(api, bed)
            return state
        time.sleep(0.2)


def verify_store(api: Client, clients: list[ChaosClient]) -> list[Problem]:
    """(a), (b) and the status rule, from one read of every network and port."""
    problems: list[Problem] = []
    nets = {n.id: n for n in api.networks()}
    ports = {p.id: p for p in api.ports()}
    for c in clients:
        for net in c.nets.values():
            stored = nets.get(net.id)
            if stored is None or net_of(stored) != net:
                why = "missing" if stored is None else f"store has {net_of(stored)}"
                problems.append(Problem("lost_write", c.index, net.id, f"network {net}: {why}",
                                        c.history.get(net.id, [])))  # fmt: skip
        for port in c.ports.values():
            got = ports.get(port.id)
            if got is None or port_of(got) != port:
                why = "missing" if got is None else f"store has {port_of(got)}"
                problems.append(Problem("lost_write", c.index, port.id, f"port {port}: {why}",
                                        c.history.get(port.id, [])))  # fmt: skip
            elif bad := status_problem(got, settled=True):
                problems.append(
                    Problem("status", c.index, port.id, bad, c.history.get(port.id, []))
                )
    owned_nets = {n for c in clients for n in c.nets}
    owned_ports = {p for c in clients for p in c.ports}
    extras: list[tuple[str, Any]] = [("network", n) for i, n in nets.items() if i not in owned_nets]
    extras += [("port", p) for i, p in ports.items() if i not in owned_ports]
    for kind, obj in extras:
        text = as_json(obj)
        owner = next((c for c in clients if obj.id in c.deleted), None)
        if owner is not None:
            problems.append(Problem("lost_write", owner.index, obj.id,
                                    f"{kind} deleted, yet still there: {text}",
                                    owner.history.get(obj.id, [])))  # fmt: skip
            continue
        owner = next((c for c in clients if obj.name in c.refused_names), None)
        check = "leftover" if owner is not None else "unexpected_object"
        problems.append(Problem(check, owner.index if owner else -1, obj.id, f"{kind} {text}",
                                owner.history.get(obj.name, []) if owner else []))  # fmt: skip
    return problems


# -- the run ----------------------------------------------------------------------------


def run(cfg: ChaosConfig, workdir: Path, progress: Progress = print) -> dict[str, Any]:
    """The whole soak; returns the figures and the verdict (``ok``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    bed = Bed(cfg, workdir, progress)
    result: dict[str, Any] = {"config": asdict(cfg)}
    try:
        bed.start()
        with bed.api() as api:
            initial = wait_settled(api, time.monotonic(), cfg.converge_timeout)
        result["initial_sync_s"] = None if initial is None else round(initial, 2)
        progress(f"{cfg.engine}: server pid {bed.server.pid}, {cfg.agents} agents in sync "
                 f"after {result['initial_sync_s']} s; {cfg.clients} clients, {cfg.duration:g} s "
                 f"of chaos, kills every {cfg.kill_min:g}-{cfg.kill_max:g} s")  # fmt: skip
        stop_clients, stop_killer = threading.Event(), threading.Event()
        clients = [
            ChaosClient(i, bed.server.url, bed.server.admin_token or "", bed.hosts,
                        seed=rng.randrange(2**32), think=cfg.think, stop=stop_clients)
            for i in range(cfg.clients)
        ]  # fmt: skip
        threads = [threading.Thread(target=c.run, name=f"chaos-client{c.index}", daemon=True)
                   for c in clients]  # fmt: skip
        t0 = time.monotonic()
        killer = Killer(bed, random.Random(rng.randrange(2**32)), stop_killer, t0)
        for th in threads:
            th.start()
        killer.start()
        next_report = t0 + 60
        while time.monotonic() - t0 < cfg.duration:
            time.sleep(min(1.0, max(0.0, cfg.duration - (time.monotonic() - t0))))
            if time.monotonic() >= next_report:
                next_report += 60
                ops = sum(len(c.ops) for c in clients)
                issues = sum(len(c.problems) for c in clients) + len(killer.problems)
                progress(f"{time.monotonic() - t0:.0f} s: {ops} operations, "
                         f"{len(killer.kills)} kills, {issues} problems so far")  # fmt: skip
        stop_killer.set()
        killer.join(timeout=600)  # a kill in progress finishes its restart
        stop_clients.set()
        for th in threads:
            th.join(timeout=600)
        chaos_s = time.monotonic() - t0
        progress(f"chaos over after {chaos_s:.0f} s; waiting for convergence")
        result |= conclude(bed, clients, killer, chaos_s)
        result["server_log"] = str(bed.server.log_path)
    finally:
        bed.stop()
    return result


def conclude(
    bed: Bed, clients: list[ChaosClient], killer: Killer, chaos_s: float
) -> dict[str, Any]:
    """After the chaos: converge, verify, summarise."""
    final: dict[str, Any] = {"converge_s": None}
    store_problems: list[Problem] = []
    hosts = [HostOut(name="?", vtep_ip="?", connected=False, in_sync=False)]
    nets = ports = -1
    try:
        with bed.api(timeout=30.0) as api:
            final = final_convergence(api, bed, bed.cfg.converge_timeout)
            store_problems = verify_store(api, clients)
            hosts = api.hosts()
            nets = len(api.networks())
            ports = len(api.ports())
    except (ClientError, httpx.HTTPError, ValueError, KeyError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        store_problems.append(Problem("verification_failed", -1, "store", why))
    result = summarise(
        clients=clients,
        killer=killer,
        final=final,
        store_problems=store_problems,
        hosts=hosts,
        chaos_s=chaos_s,
    )
    result["store"] = {"networks": nets, "ports": ports}
    return result


def summarise(
    *,
    clients: list[ChaosClient],
    killer: Killer,
    final: dict[str, Any],
    store_problems: list[Problem],
    hosts: list[HostOut],
    chaos_s: float,
) -> dict[str, Any]:
    ops = [op for c in clients for op in c.ops]
    by_kind: dict[str, dict[str, int]] = {}
    for op in ops:
        row = by_kind.setdefault(op.kind, dict.fromkeys(OUTCOMES, 0))
        row[op.outcome] += 1
    indeterminate = [op for op in ops if op.outcome == INDETERMINATE]
    resolved = Counter(op.resolved or "neither" for op in indeterminate)
    problems = [p for c in clients for p in c.problems] + killer.problems + store_problems
    checks = Counter(p.check for p in problems)
    not_in_sync = [h.name for h in hosts if not (h.connected and h.in_sync)]
    wrong_agents = final.get("agents_wrong", {"?": "not checked"})
    converge = [k["converge_s"] for k in killer.kills if k["converge_s"] is not None]
    failed = sorted(checks)
    if final.get("converge_s") is None:
        failed.append("final_convergence")
    if wrong_agents:
        failed.append("agents_equal_fdb")
    if not_in_sync:
        failed.append("hosts_in_sync")
    by_target = Counter(k["target"] for k in killer.kills)
    server_after = Counter(k["server"] for k in killer.kills if "server" in k)
    return {
        "duration_s": round(chaos_s, 1),
        "operations": {
            "total": len(ops),
            "by_outcome": {o: sum(1 for op in ops if op.outcome == o) for o in OUTCOMES},
            "by_kind": dict(sorted(by_kind.items())),
            "indeterminate_resolved": {
                k: resolved.get(k, 0) for k in ("before", "after", "neither")
            },
        },
        "kills": {
            "total": len(killer.kills),
            "by_target": {t: by_target.get(t, 0) for t in killer.targets()},
            "server_after_db_kill": dict(server_after),
            "events": killer.kills,
        },
        "convergence_after_kill_s": {
            "p50": percentile(converge, 0.5) if converge else None,
            "p99": percentile(converge, 0.99) if converge else None,
            "max": max(converge, default=None),
            "not_converged": sum(1 for k in killer.kills if k["converge_s"] is None),
        },
        "final_convergence": final,
        "lost_writes": checks.get("lost_write", 0),
        "leftovers": checks.get("leftover", 0) + checks.get("unexpected_object", 0),
        "indeterminate_neither": checks.get("indeterminate_neither", 0),
        "agents_equal_fdb": not wrong_agents,
        "hosts_in_sync": not not_in_sync,
        "hosts_not_in_sync": not_in_sync,
        "problems": dict(sorted(checks.items())),
        "problem_samples": [asdict(p) for p in problems[:30]],
        "failed_checks": failed,
        "ok": not failed,
    }
