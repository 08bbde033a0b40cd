"""The result files ``l2pop bench ... --save`` keeps in ``docs/bench/``, and how a finished
benchmark hands its result over: saved, printed as one JSON object, or shown as a table.

Each result file is an envelope::

    {"name": ..., "command": "l2pop bench ... --save", "started_at": ..., "elapsed_s": ...,
     "machine": {"cpu", "cores", "memory_gib", "kernel", "python"}, "result": {...}}
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: the result files ``l2pop bench report`` turns into the page (rest and chaos write their
#: own sections)
#: the flood benchmark's result per datapath (``l2pop bench flood --datapath``), page order
FLOOD_RESULTS = ("flood", "flood-ovs", "flood-mixed")
#: the stage-by-stage activation benchmark's result per datapath (``l2pop bench activation``)
ACTIVATION_RESULTS = ("activation", "activation-ovs", "activation-mixed")
RESULT_FILES = (
    "kernel",
    "kernel-ovs",
    "scale-sqlite",
    "scale-postgresql",
    "scale-replicas",
    "scale-curve",
    *FLOOD_RESULTS,
    *ACTIVATION_RESULTS,
    "rest",
    "ui",
)
#: the store engines a result is measured on, in page order
ENGINES = ("sqlite", "postgresql")


def activation_name(datapath: str) -> str:
    """The result a ``bench activation --datapath`` run saves."""
    return "activation" if datapath == "linux" else f"activation-{datapath}"


def default_docs() -> Path:
    """``docs/`` of the source tree l2pop runs from (an editable install), else of the
    current directory."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").exists() and (root / "src" / "l2pop").is_dir():
        return root / "docs"
    return Path.cwd() / "docs"


def machine_info() -> dict[str, Any]:
    """This machine: CPU model, cores, memory, kernel, Python."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def envelope(
    name: str, result: dict[str, Any], command: str, started_at: datetime, elapsed_s: float
) -> dict[str, Any]:
    """A result with the command that produced it, when, how long it took and where."""
    return {
        "name": name,
        "command": command,
        "started_at": started_at.astimezone(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine_info(),
        "result": finite(result),
    }


def save_result(bench_dir: Path, data: dict[str, Any]) -> Path:
    """Write an ``envelope`` to ``bench_dir/<name>.json``; returns the path."""
    bench_dir.mkdir(parents=True, exist_ok=True)
    path = bench_dir / f"{data['name']}.json"
    # written aside and renamed: a reader never sees half a file
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def load_results(bench_dir: Path) -> dict[str, dict[str, Any]]:
    """The result files present in ``bench_dir``, by name."""
    out = {}
    for name in RESULT_FILES:
        path = bench_dir / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


@dataclass(frozen=True)
class Output:
    """Where a finished benchmark's result goes: ``json`` prints it as one JSON object
    instead of a table; ``save`` also writes it to ``docs/bench/`` (``docs``, default: the
    source tree's ``docs/``)."""

    json: bool = False
    save: bool = False
    docs: Path | None = None

    @property
    def docs_dir(self) -> Path:
        return self.docs if self.docs is not None else default_docs()


def publish(
    out: Output,
    *,
    name: str,
    result: dict[str, Any],
    command: str,
    started_at: datetime,
    elapsed_s: float,
    show: Callable[[dict[str, Any]], None],
) -> None:
    """Save ``result`` as ``name`` when asked, then print it on stdout (JSON, or ``show``)."""
    if out.save:
        path = save_result(
            out.docs_dir / "bench", envelope(name, result, command, started_at, elapsed_s)
        )
        print(f"saved {path}", file=sys.stderr)
    if out.json:
        print(json.dumps(finite(result), indent=2, sort_keys=True, allow_nan=False))
    else:
        show(result)
