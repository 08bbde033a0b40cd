"""``l2pop bench kernel|scale|curve|flood|rest|ui|chaos|report``: the benchmarks' arguments.

This module only parses; each command's handler hands its arguments to ``l2pop.bench.runs``,
which runs the benchmark and prints it. Each benchmark prints its progress on stderr (a rich
spinner or bar on a terminal, plain timestamped lines otherwise) and its result on stdout: a
table, or with ``--json`` exactly one JSON object (NaN and infinities as ``null``). ``--save``
also writes the result, with the command that produced it and the machine it ran on, to
``docs/bench/<name>.json`` (``kernel``, ``kernel-ovs``, ``scale-<engine>``, ``scale-curve``,
``flood``, ``flood-ovs``, ``flood-mixed``, ``activation[-<datapath>]``, ``ui``); ``l2pop bench
report`` turns the saved results into ``docs/benchmarks.md`` and its PNG plots.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from l2pop.bench.results import Output


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
        help="kernel programming speed: l2pop's datapath vs iproute2 or ovs-ofctl (root)",
        description=(
            "Install N FDB + N neighbour entries through the agent's linux datapath, reconcile "
            "them unchanged, remove them; the same install with bridge/ip -batch and with one "
            "process per entry. With --datapath ovs: the same through the agent's Open vSwitch "
            "datapath (a private ovsdb-server + ovs-vswitchd, userspace datapath) beside "
            "ovs-ofctl --bundle add-flows, one ovs-ofctl add-flow per flow (on a sample, "
            "extrapolated) and one dump-flows. Works in a throwaway network namespace. Needs "
            "root."
        ),
    )
    k.add_argument(
        "--datapath",
        choices=("linux", "ovs"),
        default="linux",
        help="the datapath to measure (default linux; ovs saves as kernel-ovs)",
    )
    k.add_argument(
        "--entries",
        type=_positive,
        default=10_000,
        metavar="N",
        help="FDB entries (and as many neighbour entries); default 10000",
    )
    _common(k, "kernel[-ovs]")
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
    s.add_argument(
        "--replicas",
        type=_int_list,
        default=None,
        metavar="N1,N2,..",
        help=(
            "server replicas on one PostgreSQL database, one full pass per count side by side "
            "(e.g. 1,2): agents get every replica's URL, churn writes go round-robin, and with "
            "N >= 2 one replica is killed (kill -9) for the failover resync time instead of "
            "the restart; saved as scale-replicas (--engine postgresql)"
        ),
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
    f.add_argument(
        "--datapath",
        choices=("linux", "ovs", "mixed"),
        default="linux",
        help=(
            "what the hosts run: linux (default), ovs (each host its own Open vSwitch) or "
            "mixed (odd hosts linux, even hosts OVS); saved as flood-ovs / flood-mixed"
        ),
    )
    _common(f, "flood[-<datapath>]")
    f.set_defaults(func=_flood)

    _register_activation(sub)
    _register_curve(sub)

    _register_own_modules(sub)

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


def _register_own_modules(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rest`` and ``ui``, each in its own module: this one is long enough."""
    from l2pop.cli import bench_rest, bench_ui

    bench_rest.register(sub)
    bench_ui.register(sub)


def _register_activation(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "activation",
        help="a VM's activation stage by stage, tap device -> remote kernels (root)",
        description=(
            "On the netns testbed (real server and agents), one network on every host, then "
            "N activations of a new VM on h1, one at a time: the time from its tap device "
            "appearing (RTM_NEWLINK) to the last remote member holding its entry, cut into "
            "stages (agent saw it, wired, ACTIVE committed, hub batch, delta sent, received, "
            "written, kernel entry) from the agents' and the server's own bounded telemetry "
            "(agent control /trace, GET /v1/trace). p50/p99 per stage and end to end, beside "
            "FRR EVPN's 77 / 82 ms. Needs root."
        ),
    )
    a.add_argument("--hosts", type=_positive, default=4, help="hosts (default 4; at least 2)")
    a.add_argument(
        "--samples", type=_positive, default=30, metavar="N", help="activations (default 30)"
    )
    a.add_argument(
        "--datapath",
        choices=("linux", "ovs", "mixed"),
        default="linux",
        help="linux (default), ovs, or mixed (odd hosts linux, even hosts OVS); saved as "
        "activation / activation-<datapath>",
    )
    _common(a, "activation[-<datapath>]")
    a.set_defaults(func=_activation)


def _register_curve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "curve",
        help="how cost grows: the scale benchmark at several host counts",
        description=(
            "For each host count N, a scale pass on a store of 2N networks and 100N ports "
            "(N = 1000 is bench scale's default size): initial sync, server RSS, server CPU "
            "per idle host and per heartbeat over an idle window (heartbeats only), one churn "
            "rate for server CPU per event and p50/p99, then kill -9 + restart resync. Saved "
            "as scale-curve; bench report draws the table, the plot and which figures grow "
            "linearly."
        ),
    )
    c.add_argument(
        "--hosts",
        type=_int_list,
        default=[1000, 3000, 10_000],
        metavar="N1,N2,..",
        help="host counts (default 1000,3000,10000)",
    )
    c.add_argument(
        "--engine",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="store engine (postgresql: a throwaway server per host count)",
    )
    c.add_argument(
        "--rate", type=float, default=10.0, metavar="R", help="churn events/s (default 10)"
    )
    c.add_argument(
        "--duration", type=float, default=10.0, metavar="S", help="seconds of churn (default 10)"
    )
    c.add_argument(
        "--idle",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds of the heartbeats-only window server CPU is read over (default 30)",
    )
    c.add_argument(
        "--swarms",
        type=_positive,
        default=None,
        help="agent-swarm processes (default: one per 1000 agents, at least 4)",
    )
    c.add_argument(
        "--sync-timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="seconds the initial sync may take before the host count's pass fails (default 1800)",
    )
    c.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the databases and logs in DIR (default: a temporary directory)",
    )
    _common(c, "scale-curve")
    c.set_defaults(func=_curve)


# -- dispatch -----------------------------------------------------------------------------


def _output(args: argparse.Namespace) -> Output:
    """Where the result goes, from ``--json``, ``--save`` and ``--docs``."""
    from l2pop.bench.results import Output

    return Output(json=args.json, save=args.save, docs=args.docs)


def _need_root(what: str) -> int | None:
    if os.geteuid() != 0:
        print(f"error: l2pop bench {what} needs root (network namespaces)", file=sys.stderr)
        return 2
    return None


def _need_ovs(datapath: str) -> int | None:
    """2 (after one error line) when ``--datapath`` needs Open vSwitch and it is missing."""
    if datapath == "linux":
        return None
    from l2pop.testbed import ovs

    if ovs.available():
        return None
    print(
        f"error: --datapath {datapath} needs Open vSwitch (missing "
        f"{', '.join(ovs.missing())}; scripts/bootstrap installs it)",
        file=sys.stderr,
    )
    return 2


def _kernel(args: argparse.Namespace) -> int:
    if (code := _need_root("kernel")) is not None:
        return code
    if args.datapath == "ovs":
        from l2pop.testbed import ovs

        if not ovs.available():
            print(
                f"error: Open vSwitch is not installed (missing {', '.join(ovs.missing())}); "
                "scripts/bootstrap installs openvswitch-switch",
                file=sys.stderr,
            )
            return 2
    from l2pop.bench import runs

    return runs.kernel(args.entries, _output(args), datapath=args.datapath)


def _scale(args: argparse.Namespace) -> int:
    from l2pop.bench import runs, scale

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
    if args.replicas is not None:
        if args.engine != "postgresql" and max(args.replicas) > 1:
            print(
                "error: --replicas above 1 needs --engine postgresql (replicas share one "
                "PostgreSQL database; SQLite serves one server process)",
                file=sys.stderr,
            )
            return 2
        if args.engine == "postgresql":
            cfg.replicas = list(dict.fromkeys(args.replicas))
    return runs.scale(cfg, args.workdir, _output(args))


def _curve(args: argparse.Namespace) -> int:
    from l2pop.bench import runs, scale_curve

    if min(args.rate, args.duration, args.idle, args.sync_timeout) <= 0:
        print(
            "error: --rate, --duration, --idle and --sync-timeout must be positive",
            file=sys.stderr,
        )
        return 2
    cfg = scale_curve.CurveConfig(
        hosts=sorted(set(args.hosts)),
        engine=args.engine,
        rate=args.rate,
        duration=args.duration,
        idle=args.idle,
        swarms=args.swarms,
        sync_timeout=args.sync_timeout,
    )
    return runs.curve(cfg, args.workdir, _output(args))


def _flood(args: argparse.Namespace) -> int:
    if (code := _need_root("flood")) is not None:
        return code
    if (code := _need_ovs(args.datapath)) is not None:
        return code
    from l2pop.bench import runs

    return runs.flood(
        list(args.hosts), args.vms_per_network, args.networks, _output(args), args.datapath
    )


def _activation(args: argparse.Namespace) -> int:
    if (code := _need_root("activation")) is not None:
        return code
    if args.hosts < 2:
        print("error: --hosts must be at least 2", file=sys.stderr)
        return 2
    if (code := _need_ovs(args.datapath)) is not None:
        return code
    import shlex
    import time
    from datetime import UTC, datetime

    from l2pop.bench import activation_trace
    from l2pop.bench.progress import Reporter
    from l2pop.bench.results import activation_name, publish

    words = ["l2pop", "bench", "activation", "--hosts", str(args.hosts)]
    words += ["--samples", str(args.samples)]
    if args.datapath != "linux":
        words += ["--datapath", args.datapath]
    started_at, t0 = datetime.now(UTC), time.monotonic()
    title = f"activation: {args.hosts} {args.datapath} hosts, {args.samples} VMs, by stage"
    with Reporter(title) as rep:
        result = activation_trace.run(args.hosts, args.samples, args.datapath, rep)
    publish(
        _output(args),
        name=activation_name(args.datapath),
        result=result,
        command=shlex.join([*words, "--save"]),
        started_at=started_at,
        elapsed_s=time.monotonic() - t0,
        show=activation_trace.show,
    )
    return 0


def _chaos(args: argparse.Namespace) -> int:
    from l2pop.bench import chaos, runs

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
    return runs.chaos(cfg, args.workdir, _output(args), write_docs=args.write_docs)


def _report(args: argparse.Namespace) -> int:
    from l2pop.bench import runs

    return runs.report(args.docs)
