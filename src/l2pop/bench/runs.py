"""Each ``l2pop bench`` command once its arguments are parsed: run the benchmark with its
progress on stderr, record the command that reproduces it, then publish the result (saved,
JSON or a table on stdout) and, with ``--write-docs``, its section of ``docs/benchmarks.md``.

Every function returns the command's exit status. The benchmarks themselves are imported
only by the command that runs them: each pulls in a different, heavy set of modules.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2pop.bench.progress import Reporter
from l2pop.bench.results import Output, publish
from l2pop.bench.show import (
    show_chaos,
    show_flood,
    show_kernel,
    show_kernel_ovs,
    show_rest,
    show_scale,
    show_scale_replicas,
)

if TYPE_CHECKING:
    from l2pop.bench.chaos import ChaosConfig
    from l2pop.bench.scale import ScaleConfig
    from l2pop.bench.scale_curve import CurveConfig
    from l2pop.bench.ui import UiConfig


def _command(words: list[str]) -> str:
    """The shell command a saved result records, ``l2pop bench ...``."""
    return shlex.join(["l2pop", "bench", *words])


@contextmanager
def _workdir(given: Path | None, prefix: str) -> Iterator[Path]:
    """``given``, or a temporary directory removed afterwards."""
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


class _Clock:
    """When a run started (saved with its result) and how long it has taken."""

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self._t = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._t


def _publish(
    out: Output,
    *,
    name: str,
    result: dict[str, Any],
    words: list[str],
    clock: _Clock,
    show: Callable[[dict[str, Any]], None],
) -> None:
    """``publish`` with the command rebuilt from ``words`` and the run's own clock."""
    publish(
        out,
        name=name,
        result=result,
        command=_command(words),
        started_at=clock.started_at,
        elapsed_s=clock.elapsed_s,
        show=show,
    )


def kernel(entries: int, out: Output, datapath: str = "linux") -> int:
    """``l2pop bench kernel``: the linux datapath against iproute2 on ``entries`` entries;
    with ``datapath="ovs"``, the OVS datapath against ``ovs-ofctl`` (``kernel_ovs``)."""
    if datapath == "ovs":
        return kernel_ovs(entries, out)
    from l2pop.bench import kernel as bench

    clock = _Clock()
    with Reporter(f"kernel: {entries:,} FDB + {entries:,} neighbour entries") as rep:
        rep("datapath install, no-change reconcile, removal; iproute2 batch; one process per entry")
        result = bench.run(entries)
        rep(
            f"install {result['install_entries_per_s']:,} entries/s = "
            f"{result['ratio_to_iproute2_batch']} x iproute2 batch"
        )
    words = ["kernel", "--entries", str(entries), "--save"]
    _publish(out, name="kernel", result=result, words=words, clock=clock, show=show_kernel)
    return 0


def kernel_ovs(entries: int, out: Output) -> int:
    """``l2pop bench kernel --datapath ovs``: the OVS datapath against ``ovs-ofctl`` (one
    bundle, one process per flow, one dump) on ``entries`` entries; saved as ``kernel-ovs``."""
    from l2pop.bench import kernel_ovs as bench

    clock = _Clock()
    title = f"kernel (ovs): {entries:,} FDB + {entries:,} neighbour entries as flows"
    with Reporter(title) as rep:
        rep(
            "OVS datapath install, no-change reconcile, removal, leave; ovs-ofctl --bundle "
            f"add-flows; one ovs-ofctl add-flow per flow on {bench.PER_PROCESS_SAMPLE} flows; "
            "dump-flows"
        )
        result = bench.run(entries)
        rep(
            f"install {result['install_entries_per_s']:,} entries/s = "
            f"{result['ratio_to_bundle']} x ovs-ofctl bundle"
        )
    words = ["kernel", "--datapath", "ovs", "--entries", str(entries), "--save"]
    _publish(out, name="kernel-ovs", result=result, words=words, clock=clock, show=show_kernel_ovs)
    return 0


def _scale_words(cfg: ScaleConfig) -> list[str]:
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
    if cfg.replicas:
        words += ["--replicas", ",".join(str(n) for n in cfg.replicas)]
    if not cfg.restart:
        words.append("--no-restart")
    return [*words, "--save"]


def scale(cfg: ScaleConfig, workdir: Path | None, out: Output) -> int:
    """``l2pop bench scale``: a real server and many simulated agents under churn; with
    ``cfg.replicas``, a pass per replica count (``scale_replicas``, saved as
    ``scale-replicas``)."""
    if cfg.replicas:
        from l2pop.bench import scale_replicas as bench
    else:
        from l2pop.bench import scale as bench  # type: ignore[no-redef]

    words = _scale_words(cfg)
    clock = _Clock()
    title = f"scale ({cfg.engine}): {cfg.hosts:,} agents, {cfg.ports:,} ports"
    if cfg.replicas:
        title += f", replicas {','.join(str(n) for n in cfg.replicas)}"
    with _workdir(workdir, "l2pop-bench-scale-") as where, Reporter(title) as rep:
        result = bench.run(cfg, where, rep)
    name = "scale-replicas" if cfg.replicas else f"scale-{cfg.engine}"
    show = show_scale_replicas if cfg.replicas else show_scale
    _publish(out, name=name, result=result, words=words, clock=clock, show=show)
    return 0


def _curve_words(cfg: CurveConfig) -> list[str]:
    words = ["curve", "--hosts", ",".join(str(n) for n in cfg.hosts), "--engine", cfg.engine]
    words += ["--rate", f"{cfg.rate:g}", "--duration", f"{cfg.duration:g}"]
    words += ["--idle", f"{cfg.idle:g}"]
    if cfg.swarms is not None:
        words += ["--swarms", str(cfg.swarms)]
    if cfg.sync_timeout != 1800:
        words += ["--sync-timeout", f"{cfg.sync_timeout:g}"]
    return [*words, "--save"]


def curve(cfg: CurveConfig, workdir: Path | None, out: Output) -> int:
    """``l2pop bench curve``: the scale benchmark's figures at each host count, saved as
    ``scale-curve``; 1 when a host count's pass failed (the others are still published)."""
    from l2pop.bench import scale_curve as bench
    from l2pop.bench.scale_curve_report import show_curve

    clock = _Clock()
    title = f"curve ({cfg.engine}): {', '.join(f'{n:,}' for n in cfg.hosts)} hosts"
    with _workdir(workdir, "l2pop-bench-curve-") as where, Reporter(title) as rep:
        result = bench.run(cfg, where, rep)
    words = _curve_words(cfg)
    _publish(out, name="scale-curve", result=result, words=words, clock=clock, show=show_curve)
    return 1 if any("error" in s for s in result["sizes"]) else 0


def _ui_words(cfg: UiConfig) -> list[str]:
    words = ["ui", "--hosts", str(cfg.hosts)]
    if cfg.swarms is not None:
        words += ["--swarms", str(cfg.swarms)]
    words += ["--reps", str(cfg.reps), "--loads", str(cfg.loads)]
    words += ["--render-window", f"{cfg.render_window:g}"]
    if not cfg.browser:
        words.append("--no-browser")
    words += ["--rate", f"{cfg.rate:g}", "--window", f"{cfg.window:g}"]
    words += ["--watchers", ",".join(str(n) for n in cfg.watchers)]
    words += ["--passes", str(cfg.passes)]
    return [*words, "--save"]


def ui(cfg: UiConfig, workdir: Path | None, out: Output) -> int:
    """``l2pop bench ui``: the web page's reads, load and live stream at scale, saved as
    ``ui``."""
    from l2pop.bench import ui as bench
    from l2pop.bench.ui_report import show_ui

    clock = _Clock()
    title = f"ui: the web page with {cfg.hosts:,} hosts (sqlite)"
    with _workdir(workdir, "l2pop-bench-ui-") as where, Reporter(title) as rep:
        result = bench.run(cfg, where, rep)
    _publish(out, name="ui", result=result, words=_ui_words(cfg), clock=clock, show=show_ui)
    return 0


def flood_name(datapath: str) -> str:
    """The result a ``bench flood --datapath`` run saves: ``flood`` (linux, as it always
    was), ``flood-ovs`` or ``flood-mixed``."""
    return "flood" if datapath == "linux" else f"flood-{datapath}"


def flood(
    hosts: list[int], vms_per_network: int, networks: int, out: Output, datapath: str = "linux"
) -> int:
    """``l2pop bench flood``: l2pop against flood-and-learn for each host count, on hosts
    of ``datapath`` (``bench.flood.DATAPATHS``); 2 for a size or datapath it refuses."""
    from l2pop.bench import flood as bench

    try:
        for h in hosts:
            bench.Workload(networks, vms_per_network).topology(h)
            bench.host_kinds(datapath, h)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    words = ["flood", "--hosts", ",".join(map(str, hosts))]
    words += ["--vms-per-network", str(vms_per_network), "--networks", str(networks)]
    if datapath != "linux":
        words += ["--datapath", datapath]
    words.append("--save")
    clock = _Clock()
    where = "" if datapath == "linux" else f" on {datapath} hosts"
    title = f"flood: {','.join(map(str, hosts))} hosts{where}, l2pop and flood-and-learn"
    with Reporter(title, total=2 * len(hosts)) as rep:
        result = bench.run(
            hosts, vms_per_network, rep, networks=networks, advance=rep.advance, datapath=datapath
        )
    name = flood_name(datapath)
    _publish(out, name=name, result=result, words=words, clock=clock, show=show_flood)
    return 0


def _chaos_words(cfg: ChaosConfig, write_docs: bool) -> list[str]:
    words = ["chaos", "--duration", f"{cfg.duration:g}", "--db", cfg.engine]
    words += ["--agents", str(cfg.agents), "--clients", str(cfg.clients), "--seed", str(cfg.seed)]
    words += ["--kill-interval", f"{cfg.kill_min:g},{cfg.kill_max:g}"]
    return [*words, "--write-docs" if write_docs else "--save"]


def chaos(cfg: ChaosConfig, workdir: Path | None, out: Output, write_docs: bool) -> int:
    """``l2pop bench chaos``: the soak under kill -9; exits 1 when a check fails.
    ``write_docs`` saves the result and rewrites the chaos section of the page."""
    from l2pop.bench import chaos as bench
    from l2pop.bench import chaos_docs

    if write_docs:
        out = replace(out, save=True)
    words = _chaos_words(cfg, write_docs)
    clock = _Clock()
    title = f"chaos ({cfg.engine}): {cfg.agents} agents, {cfg.clients} clients, {cfg.duration:g} s"
    with _workdir(workdir, "l2pop-bench-chaos-") as where, Reporter(title) as rep:
        result = bench.run(cfg, where, rep)
    _publish(
        out, name=f"chaos-{cfg.engine}", result=result, words=words, clock=clock, show=show_chaos
    )
    if write_docs:
        print(f"wrote {chaos_docs.write(out.docs_dir)}", file=sys.stderr)
    return 0 if result["ok"] else 1


def _rest_result(
    *,
    clients: int,
    duration: float,
    ports: int,
    db: str,
    baseline_src: str | None,
    progress: Reporter,
) -> dict[str, Any]:
    """One REST run on the store engine ``db`` (postgresql: a throwaway server)."""
    from l2pop.bench import rest as bench

    def run(url: str | None) -> dict[str, Any]:
        result: dict[str, Any] = bench.run(
            clients=clients,
            duration=duration,
            ports=ports,
            db_url=url,
            server_src=baseline_src,
            progress=progress,
        )
        return result

    if db != "postgresql":
        return run(None)
    from l2pop.testbed import postgres as pg

    server = pg.ThrowawayPostgres().start()
    try:
        return run(server.create_database("l2pop_bench_rest"))
    finally:
        server.stop()


def rest(
    *,
    clients: int,
    duration: float,
    ports: int,
    db: str,
    baseline_src: str | None,
    out: Output,
    write_docs: bool,
) -> int:
    """``l2pop bench rest``: the REST API under ``clients`` concurrent clients, saved as
    ``rest-baseline`` when the server runs from another build's ``src/``. ``write_docs``
    saves the result and rewrites the REST section of the page."""
    from l2pop.bench import rest as bench
    from l2pop.bench import sections

    if write_docs:
        out = replace(out, save=True)
    clock = _Clock()
    name = "rest-baseline" if baseline_src else "rest"
    with Reporter(f"rest: {clients} clients, {duration:g} s ({db})") as rep:
        result = _rest_result(
            clients=clients,
            duration=duration,
            ports=ports,
            db=db,
            baseline_src=baseline_src,
            progress=rep,
        )
    words = ["rest", "--clients", str(clients), "--duration", f"{duration:g}"]
    words += ["--ports", str(ports), "--db", db]
    if baseline_src:
        words += ["--baseline-src", baseline_src]
    words.append("--write-docs" if write_docs else "--save")
    _publish(out, name=name, result=result, words=words, clock=clock, show=show_rest)
    if write_docs:
        docs = out.docs_dir
        page = sections.replace(docs, "rest", bench.section(docs / "bench"))
        print(f"wrote {page}", file=sys.stderr)
    return 0


def report(docs: Path | None) -> int:
    """``l2pop bench report``: regenerate the page and its plots; lists the files written."""
    from l2pop.bench.report import render
    from l2pop.bench.results import default_docs

    where = docs if docs is not None else default_docs()
    for path in render(where / "bench", where / "benchmarks.md"):
        print(f"wrote {path}")
    return 0
