"""``l2pop server`` start-up rules: the admin token, and loopback-only without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from l2pop.testbed.process import ServerProcess, free_port


def test_without_admin_token_it_refuses_non_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "L2POP_ADMIN_TOKEN"}
    cmd = [sys.executable, "-m", "l2pop", "server", "--db", f"sqlite:///{tmp_path}/x.db"]
    done = subprocess.run(
        [*cmd, "--listen", f"0.0.0.0:{free_port()}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr and "--admin-token" in done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


def test_without_admin_token_loopback_callers_are_operators(tmp_path: Path) -> None:
    with ServerProcess(
        f"sqlite:///{tmp_path}/x.db", admin_token=None, log_path=tmp_path / "log"
    ) as server:
        r = httpx.post(server.url + "/v1/networks", json={"name": "blue"})
        assert r.status_code == 201
    assert "no admin token" in (tmp_path / "log").read_text()


def test_admin_token_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "L2POP_ADMIN_TOKEN": "from-env"}
    cmd = [
        sys.executable,
        "-m",
        "l2pop",
        "server",
        "--db",
        f"sqlite:///{tmp_path}/x.db",
        "--listen",
        f"127.0.0.1:{port}",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = ServerProcess("unused", port=port)
        server.proc = proc
        server.wait_healthy(20)
        url = f"http://127.0.0.1:{port}/v1/networks"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer from-env"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_admin_token_that_starts_with_a_dash_is_passed_intact(tmp_path: Path) -> None:
    # token_urlsafe tokens start with "-" one time in 64; "--admin-token -x" would leave
    # argparse without a value and the testbed's server would not start
    token = "-dash-first-token"
    server = ServerProcess(f"sqlite:///{tmp_path}/x.db", admin_token=token)
    with server, server.api() as api:
        assert api.networks() == []
