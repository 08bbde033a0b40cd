"""TLS on the REST API and the agent channel, tokens read from files, and the mode of the
SQLite files: real server, CLI and agent processes over loopback, a throwaway CA made with
the ``openssl`` command line. Every test checks what a user sees: exit codes, one-line
errors, what ``GET /v1/hosts`` says, file modes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from l2pop.testbed.process import ServerProcess, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

ADMIN = "admin-secret-from-a-file"


# -- a throwaway PKI --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed the server's certificate
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing the server holds


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    _openssl(
        d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
        "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return d / f"{name}.pem", d / f"{name}.key"


def _make_server_cert(d: Path, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    _openssl(
        d, "x509", "-req", "-in", "server.csr", "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
    )  # fmt: skip
    return d / "server.pem", d / "server.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _make_ca(d, "test-ca")
    other_ca, _ = _make_ca(d, "other-ca")
    cert, key = _make_server_cert(d, ca, ca_key)
    return Pki(ca=ca, cert=cert, key=key, other_ca=other_ca)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def server(pki: Pki, workdir: Path) -> Iterator[ServerProcess]:
    """An https server whose admin token comes from a file (with a trailing newline)."""
    token_file = secret(workdir / "admin.token", ADMIN + "\n")
    srv = ServerProcess(
        f"sqlite:///{workdir}/l2pop.db",
        admin_token=None,
        log_path=workdir / "server.log",
        extra_args=("--admin-token-file", str(token_file), "--heartbeat-interval", "0.5"),
        tls=(pki.cert, pki.key, pki.ca),
    )
    with srv:
        yield srv


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(ADMIN) as client:
        yield client


# -- helpers ----------------------------------------------------------------------------------


def secret(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any L2POP_ setting or OpenSSL trust override, plus ``extra``."""
    drop = ("SSL_CERT_FILE", "SSL_CERT_DIR", "COLUMNS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("L2POP_") and k not in drop}
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


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a non-zero exit with exactly one ``error:`` line and no traceback; return it."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def host_listed(admin: httpx.Client, name: str) -> dict[str, Any]:
    return next(h for h in ok(admin.get("/v1/hosts")) if h["name"] == name)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not {what} after {timeout}s")


class AgentProc:
    """``l2pop agent --datapath memory`` as a child process, stopped by its pid."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        cmd = [sys.executable, "-m", "l2pop", "agent", "--datapath", "memory", *args]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env or clean_env()
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def agents() -> Iterator[list[AgentProc]]:
    started: list[AgentProc] = []
    yield started
    for agent in started:
        agent.stop()


def new_host(admin: httpx.Client, name: str, vtep: str, workdir: Path) -> Path:
    """Register ``name``; return a file holding its agent token."""
    body = ok(admin.post("/v1/hosts", json={"name": name, "vtep_ip": vtep}))
    return secret(workdir / f"{name}.token", body["token"] + "\n")


# -- the server -------------------------------------------------------------------------------


def test_server_says_https_and_takes_the_admin_token_from_its_file(
    server: ServerProcess, workdir: Path
) -> None:
    assert server.url.startswith("https://")
    assert (
        f"l2pop server on https://127.0.0.1:{server.port}" in (workdir / "server.log").read_text()
    )
    with server.client("") as anonymous:
        assert anonymous.get("/v1/networks").status_code == 401
    with server.client(ADMIN) as operator:  # the file's trailing newline is not in the token
        assert operator.get("/v1/networks").status_code == 200


def test_plain_http_to_the_tls_server_gets_nothing(server: ServerProcess) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5.0)


def test_database_files_are_owner_only(server: ServerProcess, workdir: Path) -> None:
    db = workdir / "l2pop.db"
    files = [db, *(p for p in (Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())]
    assert Path(f"{db}-wal") in files  # the store runs in WAL mode
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == {p.name: "0o600" for p in files}


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "is empty"), ("\n", "is empty"), (None, "cannot read token file")],
)
def test_server_refuses_an_unusable_admin_token_file(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    token_file = tmp_path / "admin.token"
    if content is not None:
        token_file.write_text(content)
    db = tmp_path / "x.db"
    done = l2pop("server", "--db", f"sqlite:///{db}", "--listen", f"127.0.0.1:{free_port()}",
                 "--admin-token-file", str(token_file))  # fmt: skip
    line = one_line_error(done)
    assert done.returncode == 2
    assert expected in line and str(token_file) in line
    assert not db.exists()  # refused before touching anything


def test_server_refuses_admin_token_and_token_file_together(tmp_path: Path) -> None:
    token_file = secret(tmp_path / "admin.token", "x")
    done = l2pop("server", "--db", f"sqlite:///{tmp_path}/x.db",
                 "--listen", f"127.0.0.1:{free_port()}",
                 "--admin-token", "y", "--admin-token-file", str(token_file))  # fmt: skip
    assert "--admin-token and --admin-token-file" in one_line_error(done)


def test_server_refuses_half_or_broken_tls_settings(tmp_path: Path, pki: Pki) -> None:
    base = ("server", "--db", f"sqlite:///{tmp_path}/x.db", "--listen",
            f"127.0.0.1:{free_port()}", "--admin-token", "t")  # fmt: skip
    line = one_line_error(l2pop(*base, "--tls-cert", str(pki.cert)))
    assert "--tls-cert and --tls-key" in line
    missing = tmp_path / "nope.pem"
    line = one_line_error(l2pop(*base, "--tls-cert", str(missing), "--tls-key", str(pki.key)))
    assert str(missing) in line
    # a key that does not belong to the certificate
    line = one_line_error(l2pop(*base, "--tls-cert", str(pki.cert), "--tls-key", str(pki.ca)))
    assert str(pki.cert) in line
    assert not (tmp_path / "x.db").exists()


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_lists_networks_over_https_with_the_right_ca(
    server: ServerProcess, admin: httpx.Client, pki: Pki
) -> None:
    ok(admin.post("/v1/networks", json={"name": "tls-blue"}))
    env = clean_env(L2POP_SERVER=server.url, L2POP_TOKEN=ADMIN, L2POP_TLS_CA=str(pki.ca))
    done = l2pop("network", "list", env=env)
    assert done.returncode == 0, done.stderr
    assert "tls-blue" in done.stdout
    # the option, given after the subcommand, works as well
    done = l2pop("--server", server.url, "--token", ADMIN, "network", "list",
                 "--tls-ca", str(pki.ca))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tls-blue" in done.stdout


@pytest.mark.parametrize("trust", ["other-ca", "system-store"])
def test_cli_refuses_an_untrusted_certificate(server: ServerProcess, pki: Pki, trust: str) -> None:
    env = clean_env(L2POP_SERVER=server.url, L2POP_TOKEN=ADMIN)
    if trust == "other-ca":
        env["L2POP_TLS_CA"] = str(pki.other_ca)
    done = l2pop("network", "list", env=env)
    line = one_line_error(done)
    assert done.returncode == 1
    assert "certificate" in line and server.url in line
    assert done.stdout == ""


def test_cli_refuses_an_unreadable_ca_file(server: ServerProcess, tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    done = l2pop("--server", server.url, "--token", ADMIN, "--tls-ca", str(missing),
                 "network", "list")  # fmt: skip
    assert str(missing) in one_line_error(done)


def test_cli_token_file_option_and_environment(
    server: ServerProcess, pki: Pki, tmp_path: Path
) -> None:
    token_file = secret(tmp_path / "cli.token", ADMIN + "\n")
    env = clean_env(L2POP_SERVER=server.url, L2POP_TLS_CA=str(pki.ca))
    done = l2pop("--token-file", str(token_file), "network", "list", env=env)
    assert done.returncode == 0, done.stderr
    done = l2pop("network", "list", env={**env, "L2POP_TOKEN_FILE": str(token_file)})
    assert done.returncode == 0, done.stderr
    # and without any token the server says no: the file really was what let us in
    assert "401" in one_line_error(l2pop("network", "list", env=env))


def test_cli_refuses_token_and_token_file_together(
    server: ServerProcess, pki: Pki, tmp_path: Path
) -> None:
    token_file = secret(tmp_path / "cli.token", ADMIN)
    env = clean_env(L2POP_SERVER=server.url, L2POP_TLS_CA=str(pki.ca))
    done = l2pop("--token", ADMIN, "network", "list", "--token-file", str(token_file), env=env)
    assert "--token and --token-file" in one_line_error(done)


def test_cli_refuses_an_empty_token_file(server: ServerProcess, pki: Pki, tmp_path: Path) -> None:
    token_file = secret(tmp_path / "empty.token", "")
    env = clean_env(L2POP_SERVER=server.url, L2POP_TLS_CA=str(pki.ca))
    line = one_line_error(l2pop("--token-file", str(token_file), "network", "list", env=env))
    assert str(token_file) in line and "empty" in line


# -- the agent --------------------------------------------------------------------------------


def test_agent_connects_over_wss_with_the_right_ca(
    server: ServerProcess,
    admin: httpx.Client,
    pki: Pki,
    workdir: Path,
    agents: list[AgentProc],
) -> None:
    token_file = new_host(admin, "tls-h1", "192.0.2.11", workdir)
    agent = AgentProc(
        workdir / "agent-h1.log",
        "--server", server.url, "--host", "tls-h1", "--local-ip", "192.0.2.11",
        "--token-file", str(token_file), "--tls-ca", str(pki.ca), "--heartbeat-interval", "0.5",
    )  # fmt: skip
    agents.append(agent)
    wait_for(lambda: host_listed(admin, "tls-h1")["connected"], 20, "connected")
    assert "wss://127.0.0.1" in agent.text()
    # the status reporter talks https too: a port bound here goes ACTIVE (memory datapath)
    net = ok(admin.post("/v1/networks", json={"name": "tls-green"}))
    port = ok(admin.post("/v1/ports", json={"network_id": net["id"], "host": "tls-h1"}))
    wait_for(lambda: ok(admin.get(f"/v1/ports/{port['id']}"))["status"] == "ACTIVE", 20, "ACTIVE")


def test_agent_with_a_wrong_ca_never_connects_and_keeps_retrying(
    server: ServerProcess,
    admin: httpx.Client,
    pki: Pki,
    workdir: Path,
    agents: list[AgentProc],
) -> None:
    token_file = new_host(admin, "tls-h2", "192.0.2.12", workdir)
    agent = AgentProc(
        workdir / "agent-h2.log",
        "--server", server.url, "--host", "tls-h2", "--local-ip", "192.0.2.12",
        "--token-file", str(token_file), "--tls-ca", str(pki.other_ca),
    )  # fmt: skip
    agents.append(agent)
    failure = "TLS certificate verification failed"
    wait_for(lambda: agent.text().count(failure) >= 2, 30, "retried twice")
    assert agent.proc.poll() is None  # still running, still trying
    assert not host_listed(admin, "tls-h2")["connected"]
    assert "connected to" not in agent.text()
    assert "--tls-ca" in agent.text()  # the log says what to do about it


def test_agent_refuses_token_and_token_file_together(tmp_path: Path) -> None:
    token_file = secret(tmp_path / "agent.token", "x")
    done = l2pop("agent", "--datapath", "memory", "--host", "h", "--local-ip", "192.0.2.1",
                 "--token", "x", "--token-file", str(token_file))  # fmt: skip
    assert done.returncode == 2
    assert "--token and --token-file" in one_line_error(done)


def test_agent_refuses_an_unreadable_token_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.token"
    env = clean_env(L2POP_AGENT_TOKEN_FILE=str(missing))
    done = l2pop("agent", "--datapath", "memory", "--host", "h", "--local-ip", "192.0.2.1",
                 env=env)  # fmt: skip
    assert done.returncode == 2
    line = one_line_error(done)
    assert "cannot read token file" in line and str(missing) in line
