"""``l2pop bench kernel|scale|flood|rest|chaos|report``: the benchmarks and their page.

Each benchmark prints its progress on stderr (a rich spinner or bar on a terminal, plain
timestamped lines otherwise) and its result on stdout: a table, or with ``--json`` exactly
one JSON object (NaN and infinities as ``null``). ``--save`` also writes the result, with
the command that produced it and the machine it ran on, to ``docs/bench/<name>.json``
(``kernel``, ``scale-<engine>``, ``flood``); ``l2pop bench report`` turns the saved results
into ``docs/benchmarks.md`` and its PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

Handler = Callable[[argparse.Namespace], int]


def default_docs() -> Path:
    """``docs/`` of the source tree l2pop runs from (an editable install), else of the
    current directory."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").exists() and (root / "src" / "l2pop").is_dir():
        return root / "docs"
    return Path.cwd() / "docs"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text}")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"need positive numbers: {text}")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _common(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help="print exactly one JSON object on stdout (progress stays on stderr)",
    )
    p.add_argument(
        "--save",
        action="store_true",
        help=f"also write the result and this command to DOCS/bench/{name}.json",
    )
    p.add_argument(
        "--docs",
        type=Path,
        default=None,
        metavar="DIR",
        help="the docs directory for --save (default: the source tree's docs/)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``l2pop bench``."""
    p = subparsers.add_parser(
        "bench",
        help="benchmarks: kernel programming, control-plane scale, broadcast reduction",
        description="The benchmarks and the page that publishes them.",
    )
    sub = p.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)

    k = sub.add_parser(
        "kernel",
        help="kernel programming speed: l2pop's datapath vs iproute2 (root)",
        description=(
            "Install N FDB + N neighbour entries through the agent's linux datapath, reconcile "
            "them unchanged, remove them; the same install with bridge/ip -batch and with one "
            "process per entry. Works in a throwaway network namespace. Needs root."
        ),
    )
    k.add_argument(
        "--entries",
        type=_positive,
        default=10_000,
        metavar="N",
        help="FDB entries (and as many neighbour entries); default 10000",
    )
    _common(k, "kernel")
    k.set_defaults(func=_kernel)

    s = sub.add_parser(
        "scale",
        help="control-plane scale: a real server, many simulated agents, steady churn",
        description=(
            "A real l2pop server on a bulk-populated store, simulated agents (memory datapath, "
            "real channel connections) in several processes; convergence p50/p99 under steady "
            "churn at each rate, messages per event vs fanout-to-all, server CPU and memory, "
            "then a kill -9 + restart and the time until every agent is in sync again."
        ),
    )
    s.add_argument("--hosts", type=_positive, default=1000, help="agents (default 1000)")
    s.add_argument("--networks", type=_positive, default=2000, help="networks (default 2000)")
    s.add_argument("--ports", type=_positive, default=100_000, help="ports (default 100000)")
    s.add_argument(
        "--min-span", type=_positive, default=5, help="fewest hosts a network spans (default 5)"
    )
    s.add_argument(
        "--max-span", type=_positive, default=50, help="most hosts a network spans (default 50)"
    )
    s.add_argument(
        "--swarms",
        type=_positive,
        default=4,
        help="agent-swarm processes the agents are spread over (default 4)",
    )
    s.add_argument(
        "--engine",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="store engine (postgresql: a throwaway server is started)",
    )
    s.add_argument(
        "--rates",
        type=_float_list,
        default=None,
        metavar="R1,R2,..",
        help="churn rates in port activations/s (default 25,50,100,200)",
    )
    s.add_argument(
        "--duration",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds of churn per rate (default 20)",
    )
    s.add_argument("--no-restart", action="store_true", help="skip the server restart")
    s.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the database and logs in DIR (default: a temporary directory)",
    )
    _common(s, "scale-<engine>")
    s.set_defaults(func=_scale)

    f = sub.add_parser(
        "flood",
        help="ARP broadcasts and BUM copies on the underlay: l2pop vs flood-and-learn (root)",
        description=(
            "On the netns testbed, for each host count, the same VM workload with l2pop "
            "(real server and agents) and with flood-and-learn VXLAN; tcpdump counts ARP "
            "broadcasts and BUM copies crossing the underlay, and copies reaching hosts that "
            "are not members of the network. Needs root."
        ),
    )
    f.add_argument(
        "--hosts",
        type=_int_list,
        default=[4, 8, 16],
        metavar="N1,N2,..",
        help="host counts (default 4,8,16)",
    )
    f.add_argument(
        "--vms-per-network",
        type=_positive,
        default=3,
        metavar="N",
        help="VMs per network, one per host (default 3; fewer than the hosts)",
    )
    f.add_argument("--networks", type=_positive, default=2, help="networks (default 2)")
    _common(f, "flood")
    f.set_defaults(func=_flood)

    from l2pop.cli import bench_rest  # its own module: this one is long enough

    bench_rest.register(sub)

    c = sub.add_parser(
        "chaos",
        help="soak under random kill -9 (server, agents, database): proves nothing is lost",
        description=(
            "A real server, one agent process per host (memory datapath) and client threads "
            "driving random writes and deliberate conflicts, while the server, agents and "
            "(PostgreSQL) the postmaster are killed with kill -9 at random and restarted. Then "
            "it checks that no acknowledged write was lost, no refused write left anything, "
            "every agent's tables equal its /fdb and every host is in sync. Exits 1 when a "
            "check fails."
        ),
    )
    c.add_argument(
        "--duration", type=float, default=60.0, metavar="S", help="seconds of chaos (default 60)"
    )
    c.add_argument(
        "--db",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="store engine (postgresql: a throwaway server is started, and killed too)",
    )
    c.add_argument("--agents", type=_positive, default=4, help="agent processes (default 4)")
    c.add_argument("--clients", type=_positive, default=4, help="client workers (default 4)")
    c.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    c.add_argument(
        "--kill-interval",
        type=_float_list,
        default=[3.0, 15.0],
        metavar="MIN,MAX",
        help="seconds between one recovery and the next kill (default 3,15)",
    )
    c.add_argument(
        "--converge-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="bound on every convergence wait (default 60)",
    )
    c.add_argument(
        "--think",
        type=float,
        default=0.2,
        metavar="S",
        help="mean pause between one client's operations (default 0.2)",
    )
    c.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the database and logs in DIR (default: a temporary directory)",
    )
    c.add_argument(
        "--write-docs",
        action="store_true",
        help="--save, and rewrite the chaos section of DOCS/benchmarks.md",
    )
    _common(c, "chaos-<engine>")
    c.set_defaults(func=_chaos)

    r = sub.add_parser(
        "report",
        help="regenerate docs/benchmarks.md and its plots from docs/bench/*.json",
        description=(
            "Write DOCS/benchmarks.md (tables, the machine, the commands, each target met or "
            "not) and PNG plots in DOCS/bench/ from the results saved there by --save."
        ),
    )
    r.add_argument(
        "--docs",
        type=Path,
        default=None,
        metavar="DIR",
        help="the docs directory (default: the source tree's docs/)",
    )
    r.set_defaults(func=_report)


# -- progress -----------------------------------------------------------------------------


class Reporter:
    """Progress on stderr: a rich spinner (or bar, with ``total``) on a terminal, plain
    ``[  12.3s] message`` lines otherwise. Call it with a message; ``advance()`` moves the
    bar."""

    def __init__(self, title: str, total: int | None = None, stream: TextIO | None = None):
        self.title = title
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    @property
    def tty(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def __enter__(self) -> Reporter:
        self.started = time.monotonic()
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
            if self.total is not None:
                columns += [BarColumn(), MofNCompleteColumn()]
            columns.append(TimeElapsedColumn())
            self._progress = Progress(
                *columns, console=Console(file=self.stream, highlight=False), transient=True
            )
            self._progress.start()
            self._task = self._progress.add_task(self.title, total=self.total)
        else:
            self._line(self.title)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
        took = time.monotonic() - self.started
        if exc_type is None:
            self._line(f"done in {took:.1f} s", printed=True)
        elif not issubclass(exc_type, KeyboardInterrupt):
            self._line(f"failed after {took:.1f} s: {exc}", printed=True)

    def _line(self, message: str, printed: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        text = f"[{elapsed:7.1f}s] {message}"
        if self._progress is not None and not printed:
            self._progress.console.print(text, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def __call__(self, message: str) -> None:
        self._line(message)
        if self._progress is not None:
            label = self.title.split(":", 1)[0]
            self._progress.update(self._task, description=f"{label}: {message}")

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)


# -- shared -------------------------------------------------------------------------------


def _need_root(what: str) -> int | None:
    if os.geteuid() != 0:
        print(f"error: l2pop bench {what} needs root (network namespaces)", file=sys.stderr)
        return 2
    return None


def _command(words: list[str]) -> str:
    return shlex.join(["l2pop", "bench", *words, "--save"])


def _finish(
    args: argparse.Namespace,
    *,
    name: str,
    result: dict[str, Any],
    command: str,
    started_at: datetime,
    elapsed_s: float,
    show: Callable[[dict[str, Any]], None],
) -> int:
    from l2pop.bench.report import envelope, finite, save_result

    if args.save:
        docs = args.docs if args.docs is not None else default_docs()
        path = save_result(docs / "bench", envelope(name, result, command, started_at, elapsed_s))
        print(f"saved {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(finite(result), indent=2, sort_keys=True, allow_nan=False))
    else:
        show(result)
    return 0


def _console() -> Any:
    from l2pop.cli.output import make_console

    return make_console()


def _n(value: Any, digits: int = 0) -> str:
    from l2pop.bench.report import num

    return num(value, digits)


# -- kernel -------------------------------------------------------------------------------


def _kernel(args: argparse.Namespace) -> int:
    if (code := _need_root("kernel")) is not None:
        return code
    from l2pop.bench import kernel

    started_at, t = datetime.now(UTC), time.monotonic()
    with Reporter(f"kernel: {args.entries:,} FDB + {args.entries:,} neighbour entries") as rep:
        rep("datapath install, no-change reconcile, removal; iproute2 batch; one process per entry")
        result = kernel.run(args.entries)
        rep(
            f"install {result['install_entries_per_s']:,} entries/s = "
            f"{result['ratio_to_iproute2_batch']} x iproute2 batch"
        )
    return _finish(
        args,
        name="kernel",
        result=result,
        command=_command(["kernel", "--entries", str(args.entries)]),
        started_at=started_at,
        elapsed_s=time.monotonic() - t,
        show=_show_kernel,
    )


def _show_kernel(r: dict[str, Any]) -> None:
    from rich.table import Table

    batch = r["iproute2_batch_entries_per_s"] or 1
    t = Table(title=f"kernel programming, {r['entries']:,} entries (FDB + neighbour)")
    for col in ("method", "entries/s", "vs iproute2 batch"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for label, key in (
        ("l2pop datapath: install", "install_entries_per_s"),
        ("l2pop datapath: remove", "remove_entries_per_s"),
        ("bridge/ip -batch", "iproute2_batch_entries_per_s"),
        (f"one process per entry ({r['per_process_entries']})", "per_process_entries_per_s"),
    ):
        t.add_row(label, _n(r[key]), f"{r[key] / batch:.2f} x")
    console = _console()
    console.print(t)
    console.print(
        f"no-change reconcile (dump + diff): {r['reconcile_unchanged_s'] * 1000:.1f} ms median, "
        f"{r['reconcile_unchanged_best_s'] * 1000:.1f} ms best; "
        f"bridge fdb show + ip neigh show: {r['iproute2_show_s'] * 1000:.1f} ms"
    )


# -- scale --------------------------------------------------------------------------------


def _scale(args: argparse.Namespace) -> int:
    from l2pop.bench import scale

    cfg = scale.ScaleConfig(
        hosts=args.hosts,
        networks=args.networks,
        ports=args.ports,
        min_span=args.min_span,
        max_span=args.max_span,
        swarms=args.swarms,
        engine=args.engine,
        duration=args.duration,
        restart=not args.no_restart,
    )
    if args.rates is not None:
        cfg.rates = list(args.rates)
    options = {
        "--hosts": cfg.hosts,
        "--networks": cfg.networks,
        "--ports": cfg.ports,
        "--min-span": cfg.min_span,
        "--max-span": cfg.max_span,
        "--swarms": cfg.swarms,
        "--engine": cfg.engine,
        "--rates": ",".join(f"{x:g}" for x in cfg.rates),
        "--duration": f"{cfg.duration:g}",
    }
    words = ["scale", *(w for k, v in options.items() for w in (k, str(v)))]
    if not cfg.restart:
        words.append("--no-restart")
    started_at, t = datetime.now(UTC), time.monotonic()
    title = f"scale ({cfg.engine}): {cfg.hosts:,} agents, {cfg.ports:,} ports"
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="l2pop-bench-scale-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
    try:
        with Reporter(title) as rep:
            result = scale.run(cfg, workdir, rep)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return _finish(
        args,
        name=f"scale-{cfg.engine}",
        result=result,
        command=_command(words),
        started_at=started_at,
        elapsed_s=time.monotonic() - t,
        show=_show_scale,
    )


def _show_scale(r: dict[str, Any]) -> None:
    from rich.table import Table

    cfg = r.get("config", {})
    t = Table(
        title=f"control-plane scale ({cfg.get('engine')}): {cfg.get('hosts')} agents, "
        f"{cfg.get('ports'):,} ports"
    )
    from l2pop.bench.report import SCALE_RATE_COLUMNS, scale_rate_cells

    for col in SCALE_RATE_COLUMNS:
        t.add_column(col, justify="right")
    for x in r.get("rates", []):
        t.add_row(*scale_rate_cells(x))
    console = _console()
    console.print(t)
    console.print(
        f"initial sync {_n(r.get('initial_sync_s'), 1)} s; highest rate with p99 <= 1 s: "
        f"{_n(r.get('max_rate_p99_le_1s'))}/s; in sync after kill -9 + restart: "
        f"{_n(r.get('restart_resync_s'), 1)} s"
    )


# -- flood --------------------------------------------------------------------------------


def _flood(args: argparse.Namespace) -> int:
    if (code := _need_root("flood")) is not None:
        return code
    from l2pop.bench import flood

    hosts = list(args.hosts)
    try:
        for h in hosts:
            flood.Workload(args.networks, args.vms_per_network).topology(h)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    words = [
        "flood",
        "--hosts",
        ",".join(map(str, hosts)),
        "--vms-per-network",
        str(args.vms_per_network),
        "--networks",
        str(args.networks),
    ]
    started_at, t = datetime.now(UTC), time.monotonic()
    title = f"flood: {','.join(map(str, hosts))} hosts, l2pop and flood-and-learn"
    with Reporter(title, total=2 * len(hosts)) as rep:
        result = flood.run(
            hosts, args.vms_per_network, rep, networks=args.networks, advance=rep.advance
        )
    return _finish(
        args,
        name="flood",
        result=result,
        command=_command(words),
        started_at=started_at,
        elapsed_s=time.monotonic() - t,
        show=_show_flood,
    )


def _show_flood(r: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title="what crossed the underlay for the same VM workload")
    cols = (
        "hosts",
        "design",
        "pings",
        "ARP bcast",
        "ND mcast",
        "BUM copies",
        "unknown ucast",
        "BUM to non-members",
        "VXLAN pkts",
    )
    for col in cols:
        t.add_column(col, justify="left" if col == "design" else "right")
    for row in r["results"]:
        for design in ("l2pop", "flood_and_learn"):
            c = row[design]
            t.add_row(
                str(row["hosts"]),
                design.replace("_", "-"),
                f"{c['pings_ok']}/{c['pings']}",
                _n(c["arp_broadcast"]),
                _n(c["nd_multicast"]),
                _n(c["bum"]),
                _n(c["unknown_unicast"]),
                _n(c["non_member_bum"]),
                _n(c["vxlan"]),
            )
    _console().print(t)


# -- chaos ------------------------------------------------------------------------------


def _chaos(args: argparse.Namespace) -> int:
    from l2pop.bench import chaos, chaos_docs

    interval = list(args.kill_interval)
    if len(interval) != 2 or interval[0] > interval[1]:
        print("error: --kill-interval takes MIN,MAX with MIN <= MAX", file=sys.stderr)
        return 2
    cfg = chaos.ChaosConfig(
        duration=args.duration,
        engine=args.db,
        agents=args.agents,
        clients=args.clients,
        seed=args.seed,
        kill_min=interval[0],
        kill_max=interval[1],
        converge_timeout=args.converge_timeout,
        think=args.think,
    )
    words = ["chaos", "--duration", f"{cfg.duration:g}", "--db", cfg.engine]
    words += ["--agents", str(cfg.agents), "--clients", str(cfg.clients), "--seed", str(cfg.seed)]
    words += ["--kill-interval", f"{cfg.kill_min:g},{cfg.kill_max:g}"]
    if args.write_docs:
        args.save = True
    started_at, t = datetime.now(UTC), time.monotonic()
    title = f"chaos ({cfg.engine}): {cfg.agents} agents, {cfg.clients} clients, {cfg.duration:g} s"
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="l2pop-bench-chaos-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
    try:
        with Reporter(title) as rep:
            result = chaos.run(cfg, workdir, rep)
    finally:
        if tmp is not None:
            tmp.cleanup()
    words.append("--write-docs" if args.write_docs else "--save")
    command = shlex.join(["l2pop", "bench", *words])
    _finish(
        args,
        name=f"chaos-{cfg.engine}",
        result=result,
        command=command,
        started_at=started_at,
        elapsed_s=time.monotonic() - t,
        show=_show_chaos,
    )
    if args.write_docs:
        docs = args.docs if args.docs is not None else default_docs()
        print(f"wrote {chaos_docs.write(docs)}", file=sys.stderr)
    return 0 if result["ok"] else 1


def _show_chaos(r: dict[str, Any]) -> None:
    from rich.table import Table

    cfg = r["config"]
    ops, kills, conv = r["operations"], r["kills"], r["convergence_after_kill_s"]
    t = Table(title=f"chaos ({cfg['engine']}): {r['duration_s']:g} s, seed {cfg['seed']}")
    for col in ("operation", "acknowledged", "refused", "indeterminate"):
        t.add_column(col, justify="left" if col == "operation" else "right")
    outcomes = ("acknowledged", "refused", "indeterminate")
    for kind, row in ops["by_kind"].items():
        t.add_row(kind, *(_n(row[o]) for o in outcomes))
    t.add_row("total", *(_n(ops["by_outcome"][o]) for o in outcomes))
    console = _console()
    console.print(t)
    resolved = ops["indeterminate_resolved"]
    targets = ", ".join(f"{k} {v}" for k, v in kills["by_target"].items())
    after_db = kills["server_after_db_kill"]
    tail = f"; server after a database kill: {after_db}" if after_db else ""
    console.print(f"kills: {kills['total']} ({targets}){tail}")
    console.print(
        f"in sync after a kill: p50 {_n(conv['p50'], 2)} s, max {_n(conv['max'], 2)} s, "
        f"not converged {conv['not_converged']}; final convergence "
        f"{_n(r['final_convergence'].get('converge_s'), 2)} s"
    )
    console.print(
        f"indeterminate resolved: before {resolved['before']}, after {resolved['after']}, "
        f"neither {resolved['neither']}; lost writes {r['lost_writes']}, leftovers "
        f"{r['leftovers']}; agents equal /fdb: {r['agents_equal_fdb']}; hosts in sync: "
        f"{r['hosts_in_sync']}"
    )
    for p in r["problem_samples"][:10]:
        console.print(f"problem {p['check']}: client {p['client']} {p['target']}: {p['detail']}")
    verdict = "[bold green]all checks passed[/]"
    if not r["ok"]:
        verdict = f"[bold red]FAILED: {', '.join(r['failed_checks'])}[/]"
    console.print(verdict)


# -- report -------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    from l2pop.bench.report import render

    docs = args.docs if args.docs is not None else default_docs()
    for path in render(docs / "bench", docs / "benchmarks.md"):
        print(f"wrote {path}")
    return 0
