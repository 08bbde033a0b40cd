"""Running ``l2pop server`` and ``l2pop agent`` as services (ADR 26), as real processes:
configuration errors at start, the four layers of options, systemd readiness
(``READY=1`` / ``STOPPING=1`` on ``NOTIFY_SOCKET``), JSON logs, and the units in
``contrib/systemd`` as ``systemd-analyze verify`` sees them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from l2pop.client import Client
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "contrib" / "systemd"
ADMIN = "admin-secret"
AGENT = ["--datapath", "memory", "--host", "h1", "--local-ip", "192.0.2.1"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ``L2POP_*`` or ``NOTIFY_SOCKET`` of the caller's."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("L2POP_") and k != "NOTIFY_SOCKET"
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def l2pop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l2pop", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


# -- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["server", "agent"])
@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('heartbeat-interval = "soon"\n', 'heartbeat-interval: expected a number, got "soon"'),
        ("no-such-option = 1\n", "no-such-option: unknown option"),
        ("[table\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(
    tmp_path: Path, command: str, toml: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    line = one_error_line(l2pop(command, "--config", str(path)))
    assert line.startswith(f"error: {path}: ") and expected in line
    assert not list(tmp_path.glob("*.db"))  # refused before touching anything


@pytest.mark.parametrize("command", ["server", "agent"])
def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.toml"
    line = one_error_line(l2pop(command, env=clean_env(L2POP_CONFIG=str(missing))))
    assert line == f"error: {missing}: cannot read the config file: No such file or directory"


def test_a_bad_environment_value_is_one_line_and_exit_2() -> None:
    line = one_error_line(l2pop("agent", *AGENT, env=clean_env(L2POP_DATAPATH="ovz")))
    assert line == 'error: L2POP_DATAPATH: expected one of linux, memory, ovs, got "ovz"'


# -- the four layers, in a real server ------------------------------------------------------------


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    port = free_port()
    token = tmp_path / "admin.token"
    token.write_text(ADMIN + "\n")
    config = tmp_path / "server.toml"
    config.write_text(
        f'db = "sqlite:///{tmp_path / "file.db"}"\n'  # overridden by the flag
        f'listen = "127.0.0.1:{port}"\n'  # only here
        'replica = "from-file"\n'  # overridden by the environment
        f'admin-token-file = "{token}"\n'
        "max-body = 2000\n"
    )
    cmd = [sys.executable, "-m", "l2pop", "server", "--config", str(config)]
    cmd += ["--db", f"sqlite:///{tmp_path / 'flag.db'}"]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=clean_env(L2POP_REPLICA="from-env")
    )
    server = ServerProcess("unused", port=port)
    server.proc = proc
    try:
        server.wait_healthy(30)
        health = httpx.get(server.url + "/healthz").json()
        assert health["replica"] == "from-env"
        assert (tmp_path / "flag.db").exists() and not (tmp_path / "file.db").exists()
        with server.client(ADMIN) as http:
            assert http.get("/v1/networks").status_code == 200
            assert http.post("/v1/networks", content=b"x" * 3000).status_code == 413
            # the default max-connections (4096) stands: nothing refused one connection
        assert httpx.get(server.url + "/v1/networks").status_code == 401
    finally:
        server.stop()
        log.close()


# -- readiness and JSON logs ----------------------------------------------------------------------


class NotifySocket:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def expect(
        self, variable: str, timeout: float, proc: subprocess.Popen[bytes] | None = None
    ) -> None:
        """Wait for a message holding ``variable`` (``READY=1``); ``proc``, if given, must
        live meanwhile (datagrams sent before an exit stay queued, so none is needed for a
        ``STOPPING=1``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None:
                assert proc.poll() is None, f"exited with {proc.returncode} before {variable}"
            self.sock.settimeout(0.2)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if variable.encode() in data.split(b"\n"):
                return
        raise AssertionError(f"no {variable} within {timeout}s")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "server.notify")
    yield sock
    sock.close()


def json_lines(path: Path) -> list[dict[str, object]]:
    """Every line of ``path`` as JSON (a line that is not fails the test)."""
    lines = path.read_text().splitlines()
    assert lines, f"{path} is empty"
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line in {path.name}: {line!r}")
    return entries


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # by the pid we started
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_server_and_agent_notify_systemd_and_log_json(tmp_path: Path, notify: NotifySocket) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "l2pop", "server", "--db", f"sqlite:///{tmp_path / 'l.db'}"]
    cmd += ["--listen", f"127.0.0.1:{port}", f"--admin-token={ADMIN}", "--log-format", "json"]
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=clean_env(NOTIFY_SOCKET=notify.path)
        )
    agent: subprocess.Popen[bytes] | None = None
    agent_notify = NotifySocket(tmp_path / "agent.notify")
    try:
        notify.expect("READY=1", 60, server)
        # READY=1 means serving: /healthz answers at once, no retry
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200

        with Client(url, ADMIN) as api:
            token = api.create_host("h1", "192.0.2.1").token
            control = f"127.0.0.1:{free_port()}"
            env = clean_env(NOTIFY_SOCKET=agent_notify.path, L2POP_AGENT_TOKEN=token)
            # logs on stderr; stdout has the "control listening" line programs read
            with (tmp_path / "agent.log").open("wb") as err:
                agent = subprocess.Popen(
                    [sys.executable, "-m", "l2pop", "agent", "--server", url, *AGENT,
                     "--control", control, "--log-format", "json",
                     "--heartbeat-interval", "0.5"],
                    stdout=subprocess.DEVNULL, stderr=err, env=env,
                )  # fmt: skip
            agent_notify.expect("READY=1", 60, agent)
            # READY=1 means up: its control endpoint answers at once
            reply = httpx.get(f"http://{control}/agents", timeout=5)
            assert [a["host"] for a in reply.json()] == ["h1"]
            deadline = time.monotonic() + 30
            while not api.host("h1").connected:
                assert time.monotonic() < deadline, "the agent never connected"
                time.sleep(0.1)
        stop(agent)
        assert agent.returncode == 0
        agent_notify.expect("STOPPING=1", 5)
    finally:
        if agent is not None:
            stop(agent)
        agent_notify.close()
        stop(server)
    # uvicorn re-raises the SIGTERM it handled once it has shut down: systemd counts a
    # death by SIGTERM as a clean stop
    assert server.returncode in (0, -signal.SIGTERM)

    entries = json_lines(server_log)
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    connected = [e for e in entries if e.get("host") == "h1" and "connected" in str(e["message"])]
    assert connected, "no server line names the agent's host"
    assert all(str(e["time"]).endswith("Z") for e in entries)
    agent_entries = json_lines(tmp_path / "agent.log")
    assert all(e.get("host") == "h1" for e in agent_entries)  # every agent line names it


def test_an_agent_is_ready_while_its_server_is_unreachable(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """Readiness is "up", not "in sync" (ADR 26): ``systemctl start`` must return while the
    server is down; the agent keeps reconnecting."""
    nowhere = f"http://127.0.0.1:{free_port()}"  # nobody listens
    cmd = [sys.executable, "-m", "l2pop", "agent", "--server", nowhere, *AGENT, "--token", "t"]
    agent = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(NOTIFY_SOCKET=notify.path),
    )
    try:
        notify.expect("READY=1", 30, agent)
        stop(agent)
        assert agent.returncode == 0
        notify.expect("STOPPING=1", 5)
    finally:
        stop(agent)


def test_the_server_reports_stopping(tmp_path: Path, notify: NotifySocket) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "l2pop", "server", "--db", f"sqlite:///{tmp_path / 'l.db'}"]
    cmd += ["--listen", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(NOTIFY_SOCKET=notify.path),
    )
    try:
        notify.expect("READY=1", 60, server)
        stop(server)
        assert server.returncode in (0, -signal.SIGTERM)  # as above
        notify.expect("STOPPING=1", 5)
    finally:
        stop(server)


def test_workers_are_ready_together(
    tmp_path: Path, notify: NotifySocket, postgres: ThrowawayPostgres
) -> None:
    """The supervisor says READY=1 once every worker serves; the workers never reach
    systemd themselves."""
    with postgres.database("l2pop_ready") as db:
        port = free_port()
        cmd = [sys.executable, "-m", "l2pop", "server", "--listen", f"127.0.0.1:{port}"]
        cmd += ["--workers", "2", "--replica", "ctl"]
        env = clean_env(NOTIFY_SOCKET=notify.path, L2POP_DB=db)
        log = tmp_path / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            notify.expect("READY=1", 60, server)
            seen = set()
            for _ in range(40):  # fresh connections: the kernel spreads them over workers
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"})
                seen.add(r.json()["replica"])
            assert seen == {"ctl/w0", "ctl/w1"}
            notify.sock.settimeout(0.5)
            with pytest.raises(TimeoutError):  # no worker's own READY=1 reached us
                notify.sock.recv(4096)
        finally:
            stop(server)


# -- the systemd units ---------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["l2pop-server.service", "l2pop-agent.service"])
def test_the_units_verify(tmp_path: Path, unit: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (UNITS / unit).read_text()
    command = "server" if "server" in unit else "agent"
    assert f"ExecStart=/usr/local/bin/l2pop {command} --config /etc/l2pop/{command}.toml" in text
    assert "Type=notify" in text and "Restart=on-failure" in text
    # verify wants ExecStart's binary to exist: the same unit, pointed at this l2pop
    here = Path(sys.executable).with_name("l2pop")
    if not here.exists():
        pytest.skip(f"no l2pop script next to {sys.executable}")
    (tmp_path / unit).write_text(text.replace("/usr/local/bin/l2pop", str(here)))
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_the_agent_unit_orders_after_the_network_and_open_vswitch() -> None:
    text = (UNITS / "l2pop-agent.service").read_text()
    assert "After=network-online.target openvswitch-switch.service" in text
    assert "Wants=network-online.target openvswitch-switch.service" in text
    assert "Requires=" not in text  # the linux datapath needs no Open vSwitch
    assert "CAP_NET_ADMIN" in text
