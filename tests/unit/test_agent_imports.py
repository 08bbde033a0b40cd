"""What an agent process imports: none of the server's, the store's or the command-line
tools' modules, so its resident memory stays low (measured: 49 MiB -> 39 MiB in sync on the
linux datapath once httpx, rich, click, pygments and the REST models were gone; pydantic
went with the channel's move to msgspec).

The real entry is run, ``python -m l2pop agent``'s ``main``, in a fresh interpreter: the
agent starts (memory datapath) against a port where nobody listens, tries to connect for a
moment, then takes SIGTERM; its module list is read just before.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

#: top-level packages an agent must not import (server side, store, CLI output, REST client)
FORBIDDEN_PACKAGES = (
    "click",
    "fastapi",
    "httpcore",
    "httpx",
    "prometheus_client",
    "psycopg",
    # the channel's messages are msgspec Structs; pydantic is the REST models' (wire.api)
    "pydantic",
    "pydantic_core",
    "pygments",
    "rich",
    "sqlalchemy",
    "starlette",
    "uvicorn",
)
#: l2pop modules (and their submodules) an agent must not import
FORBIDDEN_L2POP = (
    "l2pop._answers",
    "l2pop.bench",
    "l2pop.cli.output",
    "l2pop.client",
    "l2pop.console",
    "l2pop.demo",
    "l2pop.server",
    "l2pop.store",
    "l2pop.testbed",
    "l2pop.wire.api",
)

_SCRIPT = """
import json, os, signal, sys, threading

def dump():
    with open(sys.argv[1], "w") as f:
        json.dump(sorted(sys.modules), f)
    os.kill(os.getpid(), signal.SIGTERM)

import l2pop.datapath.linux  # the linux datapath's modules (it needs root to run)
from l2pop.cli.main import main

threading.Timer(1.5, dump).start()
sys.exit(main(sys.argv[2:]))
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _forbidden(modules: list[str]) -> list[str]:
    bad = [m for m in modules if m.split(".")[0] in FORBIDDEN_PACKAGES]
    bad += [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_L2POP)]
    return sorted(bad)


def test_a_running_agent_imports_no_server_store_or_cli_modules(tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    argv = ["agent", "--datapath", "memory", "--host", "h1", "--local-ip", "192.0.2.1"]
    argv += ["--server", f"http://127.0.0.1:{_closed_port()}", "--token", "t"]
    argv += ["--control", "127.0.0.1:0", "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(out), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = json.loads(out.read_text())
    # it did run: the agent, its channel (websockets) and its status client are in
    assert {"l2pop.agent.channel", "l2pop.agent.statushttp", "websockets", "msgspec"} <= set(
        modules
    )
    assert _forbidden(modules) == []


def test_the_guard_would_see_a_forbidden_import() -> None:
    seen = ["httpx._client", "l2pop.wire.api", "l2pop.wire.channel", "l2pop.agent", "msgspec"]
    assert _forbidden([*seen, "pydantic.main"]) == [
        "httpx._client",
        "l2pop.wire.api",
        "pydantic.main",
    ]


def test_building_the_cli_parser_imports_no_client_output_or_models() -> None:
    """Every command (``l2pop agent`` too) builds the whole parser first: it must not pay
    for httpx, rich or pydantic, which only the commands that use them import."""
    code = (
        "import json, sys\n"
        "from l2pop.cli.main import build_parser\n"
        "build_parser()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout)
    assert _forbidden(modules) == []
    assert [m for m in modules if m.split(".")[0] in ("pydantic", "websockets")] == []
