"""The ``l2pop`` command line, run as a subprocess against a real server.

One server (SQLite in a temporary directory) serves the whole module; every test uses
its own names and VTEP IPs so the tests do not depend on each other.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l2pop import client
from l2pop.cli import common
from l2pop.testbed.process import ServerProcess, free_port

ADMIN = "admin-secret"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("cli")
    proc = ServerProcess(
        f"sqlite:///{tmp}/l2pop.db", admin_token=ADMIN, log_path=Path(tmp) / "server.log"
    )
    with proc:
        yield proc


def cli(
    server: ServerProcess | str,
    *args: str,
    token: str | None = ADMIN,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m l2pop --server URL --token T ARGS``; never raises on exit code."""
    url = server if isinstance(server, str) else server.url
    base = {k: v for k, v in os.environ.items() if not k.startswith("L2POP_") and k != "COLUMNS"}
    cmd = [sys.executable, "-m", "l2pop", "--server", url]
    if token is not None:
        cmd += ["--token", token]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def ok_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(ok(cli(server, "-o", "json", *args)))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the CLI failed with exit 1 and exactly one ``error:`` line; return it."""
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert result.stdout == ""
    return lines[0]


def report_status(server: ServerProcess, port_id: str, token: str, status: str) -> None:
    """What an agent does when a device is wired (ACTIVE) or gone (DOWN)."""
    with client.Client(server.url, token) as agent:
        assert agent.report_status(port_id, status).status == status


def test_default_server_is_the_clients() -> None:
    # spelled twice so that building the parser does not import the client
    assert common.DEFAULT_SERVER == client.DEFAULT_SERVER


# -- walkthrough ------------------------------------------------------------------------


def test_walkthrough_json(server: ServerProcess) -> None:
    h1 = ok_json(server, "host", "create", "j-h1", "--vtep-ip", "192.0.2.11")
    h2 = ok_json(server, "host", "create", "j-h2", "--vtep-ip", "192.0.2.12")
    assert h1["name"] == "j-h1" and h1["vtep_ip"] == "192.0.2.11" and h1["token"]
    assert h2["token"] and h2["token"] != h1["token"]

    net = ok_json(server, "network", "create", "--name", "j-blue", "--vni", "1001")
    assert net["name"] == "j-blue" and net["vni"] == 1001
    assert net["arp_suppression"] == "neigh_suppress"
    assert UUID_RE.fullmatch(net["id"])

    # NET by name; IPv4 + IPv6; explicit MAC normalised to lower case.
    p1 = ok_json(
        server, "port", "create", "--network", "j-blue", "--name", "vm1",
        "--ip", "198.19.0.10", "--ip", "2001:db8::10", "--mac", "FA:16:3E:00:00:01",
    )  # fmt: skip
    assert p1["network_id"] == net["id"] and p1["name"] == "vm1"
    assert sorted(p1["fixed_ips"]) == ["198.19.0.10", "2001:db8::10"]
    assert p1["mac"] == "fa:16:3e:00:00:01"
    assert p1["host"] is None and p1["status"] == "DOWN"
    p2 = ok_json(server, "port", "create", "--network", net["id"], "--ip", "198.19.0.11")
    assert p2["mac"].startswith("fa:16:3e:")

    bound = ok_json(server, "port", "bind", p1["id"], "--host", "j-h1")
    assert bound["host"] == "j-h1" and bound["status"] == "BUILD"
    assert ok_json(server, "port", "bind", p2["id"], "--host", "j-h2")["status"] == "BUILD"

    on_h1 = ok_json(server, "port", "list", "--network", "j-blue", "--host", "j-h1")
    assert [p["id"] for p in on_h1] == [p1["id"]]
    building = ok_json(server, "port", "list", "--network", net["id"], "--status", "build")
    assert {p["id"] for p in building} == {p1["id"], p2["id"]}
    assert ok_json(server, "port", "list", "--network", "j-blue", "--status", "ACTIVE") == []
    assert ok_json(server, "port", "show", p1["id"]) == bound

    # The agent of j-h2 reports its port wired: j-h1 must now point p2's MAC at j-h2.
    report_status(server, p2["id"], h2["token"], "ACTIVE")
    fdb = ok_json(server, "fdb", "show", "--host", "j-h1")
    assert fdb["host"] == "j-h1" and isinstance(fdb["revision"], int) and fdb["digest"]
    (section,) = [n for n in fdb["networks"] if n["network_id"] == net["id"]]
    assert section["vni"] == 1001
    assert section["flood"] == ["192.0.2.12"]
    assert section["fdb"] == [{"mac": p2["mac"], "vtep": "192.0.2.12"}]
    assert section["neigh"] == [{"ip": "198.19.0.11", "mac": p2["mac"]}]

    # JSON output is exactly the server's JSON.
    with server.client() as http:
        assert ok_json(server, "host", "list") == http.get("/v1/hosts").json()
        assert (
            ok_json(server, "network", "show", "j-blue")
            == http.get(f"/v1/networks/{net['id']}").json()
        )
        assert ok_json(server, "port", "list") == http.get("/v1/ports").json()
        assert (
            ok_json(server, "fdb", "show", "--host", "j-h1")
            == http.get("/v1/hosts/j-h1/fdb").json()
        )

    unbound = ok_json(server, "port", "unbind", p1["id"])
    assert unbound["host"] is None and unbound["status"] == "DOWN"

    for port in (p1, p2):
        assert ok(cli(server, "-o", "json", "port", "delete", port["id"])) == ""
    one_line_error(cli(server, "port", "show", p1["id"]))
    assert ok(cli(server, "-o", "json", "network", "delete", "j-blue")) == ""
    for name in ("j-h1", "j-h2"):
        assert ok(cli(server, "-o", "json", "host", "delete", name)) == ""
    assert "j-h1" not in {h["name"] for h in ok_json(server, "host", "list")}


def test_walkthrough_table(server: ServerProcess) -> None:
    out = ok(cli(server, "host", "create", "t-h1", "--vtep-ip", "192.0.2.21"))
    assert "t-h1" in out and "192.0.2.21" in out
    assert "shown once" in out
    token_h1 = next(line.split()[-1] for line in out.splitlines() if "--token" in line)
    out = ok(cli(server, "host", "create", "t-h2", "--vtep-ip", "192.0.2.22"))
    token_h2 = next(line.split()[-1] for line in out.splitlines() if "--token" in line)
    assert token_h1 != token_h2

    out = ok(cli(server, "network", "create", "--name", "t-red", "--arp-suppression", "proxy"))
    assert "t-red" in out and "proxy" in out
    net_id = UUID_RE.search(out)
    assert net_id is not None

    out = ok(
        cli(
            server, "port", "create", "--network", "t-red", "--name", "t-vm1",
            "--ip", "203.0.113.5", "--ip", "2001:db8:1::5", "--mac", "fa:16:3e:aa:bb:01",
        )
    )  # fmt: skip
    for value in ("t-vm1", "203.0.113.5", "2001:db8:1::5", "fa:16:3e:aa:bb:01", "DOWN"):
        assert value in out
    match = UUID_RE.search(out.split("network_id")[0])
    assert match is not None
    p1 = match.group()
    out = ok(cli(server, "port", "create", "--network", "t-red", "--ip", "203.0.113.6"))
    match = UUID_RE.search(out)
    assert match is not None
    p2 = match.group()

    out = ok(cli(server, "port", "bind", p1, "--host", "t-h1"))
    assert "t-h1" in out and "BUILD" in out
    ok(cli(server, "port", "bind", p2, "--host", "t-h2"))

    out = ok(cli(server, "port", "list", "--network", "t-red", "--host", "t-h1"))
    assert p1 in out and p2 not in out
    assert "t-red" in out and "BUILD" in out and "203.0.113.5" in out
    out = ok(cli(server, "port", "show", p1))
    assert p1 in out and "fa:16:3e:aa:bb:01" in out and "2001:db8:1::5" in out

    with client.Client(server.url, ADMIN) as api:
        mac2 = api.port(p2).mac
    report_status(server, p2, token_h2, "ACTIVE")
    out = ok(cli(server, "fdb", "show", "--host", "t-h1"))
    assert "revision" in out and "digest" in out
    assert "t-red" in out and "flood: 192.0.2.22" in out
    assert re.search(rf"{mac2}\s+192\.0\.2\.22", out), out
    assert re.search(rf"203\.0\.113\.6\s+{mac2}", out), out

    out = ok(cli(server, "host", "list"))
    for column in ("name", "vtep_ip", "connected", "last_seen", "applied_revision", "lag"):
        assert column in out
    assert "t-h1" in out and "192.0.2.21" in out and "in_sync" in out
    assert "server revision:" in out
    out = ok(cli(server, "host", "show", "t-h2"))
    assert "t-h2" in out and "192.0.2.22" in out and "lag" in out

    out = ok(cli(server, "port", "unbind", p1))
    assert "DOWN" in out
    assert "Deleted port" in ok(cli(server, "port", "delete", p1))
    ok(cli(server, "port", "delete", p2))
    assert "Deleted network" in ok(cli(server, "network", "delete", "t-red"))
    assert "Deleted host" in ok(cli(server, "host", "delete", "t-h1"))
    ok(cli(server, "host", "delete", "t-h2"))


def test_network_by_name_and_set(server: ServerProcess) -> None:
    net = ok_json(server, "network", "create", "--name", "n-green")
    shown = ok_json(server, "network", "show", "n-green")
    assert shown["id"] == net["id"]
    changed = ok_json(server, "network", "set", "n-green", "--arp-suppression", "off")
    assert changed["arp_suppression"] == "off" and changed["id"] == net["id"]
    renamed = ok_json(server, "network", "set", net["id"], "--name", "n-lime")
    assert renamed["name"] == "n-lime"
    assert "no network" in one_line_error(cli(server, "network", "show", "n-green"))
    # Global options are accepted after the subcommand too.
    listed = json.loads(ok(cli(server, "network", "list", "-o", "json")))
    assert net["id"] in {n["id"] for n in listed}
    ok(cli(server, "network", "delete", "n-lime"))


def test_ambiguous_network_name(server: ServerProcess) -> None:
    first = cli(server, "-o", "json", "network", "create", "--name", "n-twin")
    second = cli(server, "-o", "json", "network", "create", "--name", "n-twin")
    ok(first)
    if second.returncode != 0:
        pytest.skip("the server refuses duplicate network names")
    message = one_line_error(cli(server, "network", "show", "n-twin"))
    assert "ambiguous" in message
    for net in (json.loads(first.stdout), json.loads(second.stdout)):
        ok(cli(server, "network", "delete", net["id"]))


def test_env_options(server: ServerProcess) -> None:
    env = {"L2POP_SERVER": server.url, "L2POP_TOKEN": ADMIN}
    result = subprocess.run(
        [sys.executable, "-m", "l2pop", "-o", "json", "network", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert isinstance(json.loads(ok(result)), list)


# -- errors -----------------------------------------------------------------------------


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = one_line_error(cli(url, "network", "list"))
    assert message.startswith(f"error: cannot reach l2pop server at {url}")
    assert "refused" in message


def test_bad_mac(server: ServerProcess) -> None:
    net = ok_json(server, "network", "create", "--name", "e-mac")
    result = cli(server, "port", "create", "--network", "e-mac", "--mac", "zz:16:3e:00:00:01")
    message = one_line_error(result)
    assert message.startswith("error: mac: ") and message.endswith(" (422 invalid)"), message
    assert ok_json(server, "port", "list", "--network", net["id"]) == []
    ok(cli(server, "network", "delete", net["id"]))


def test_unknown_network_id(server: ServerProcess) -> None:
    missing = str(uuid.uuid4())
    assert missing in one_line_error(cli(server, "network", "show", missing))
    one_line_error(cli(server, "port", "create", "--network", missing, "--ip", "198.19.9.9"))
    one_line_error(cli(server, "network", "delete", missing))


def test_wrong_token(server: ServerProcess) -> None:
    message = one_line_error(cli(server, "network", "list", token="not-the-token"))
    assert "401" in message or "403" in message
    one_line_error(cli(server, "network", "list", token=None))


def test_conflict_is_one_line(server: ServerProcess) -> None:
    ok_json(server, "host", "create", "e-h1", "--vtep-ip", "192.0.2.31")
    message = one_line_error(cli(server, "host", "create", "e-h2", "--vtep-ip", "192.0.2.31"))
    assert "409" in message
    ok(cli(server, "host", "delete", "e-h1"))


def test_usage_error_exit_2(server: ServerProcess) -> None:
    result = cli(server, "network", "create", "--vni", "not-a-number")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert cli(server, "port", "bind", str(uuid.uuid4())).returncode == 2  # --host missing


def test_invalid_server_url() -> None:
    one_line_error(cli("ftp://example.invalid", "network", "list"))


def test_network_encap(server: ServerProcess) -> None:
    gre = ok_json(server, "network", "create", "--name", "e-gre", "--encap", "gre")
    assert gre["encap"] == "gre"
    assert ok_json(server, "network", "create", "--name", "e-plain")["encap"] == "vxlan"
    result = cli(server, "network", "create", "--name", "e-bad", "--encap", "geneve")
    assert result.returncode == 2 and "--encap" in result.stderr

    out = ok(cli(server, "network", "list"))
    assert "encap" in out  # the column's header
    (row,) = [line for line in out.splitlines() if "e-gre" in line]
    assert "gre" in row.replace("e-gre", "")
    out = ok(cli(server, "network", "show", "e-gre"))
    assert re.search(r"encap\s+.*gre", out), out

    # fdb show names each network's encap; host list/show the announced datapath and encaps
    host = ok_json(server, "host", "create", "e-h1", "--vtep-ip", "192.0.2.31")
    assert host["datapath"] is None and host["encaps"] is None
    ok_json(server, "port", "create", "--network", "e-gre", "--host", "e-h1")
    fdb = ok_json(server, "fdb", "show", "--host", "e-h1")
    assert [n["encap"] for n in fdb["networks"]] == ["gre"]
    assert "encap gre" in ok(cli(server, "fdb", "show", "--host", "e-h1"))
    out = ok(cli(server, "host", "show", "e-h1"))
    assert re.search(r"datapath\s", out) and re.search(r"encaps\s", out), out
    out = ok(cli(server, "host", "list", env={"COLUMNS": "200"}))
    assert "datapath" in out and "encaps" in out, out
