"""``l2pop.cli.config``: options in layers (defaults < file < environment < flags) for
``l2pop server`` and ``l2pop agent``, their errors, and the docs and examples that list them."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from l2pop.cli import server as cli_server
from l2pop.cli.config import ConfigError, Layers, resolve
from l2pop.cli.main import build_parser
from l2pop.server import workers

ROOT = Path(__file__).resolve().parents[2]
AGENT = ["agent", "--host", "h", "--local-ip", "192.0.2.1"]


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def resolved(
    argv: list[str], environ: Mapping[str, str] | None = None, toml: str | None = None, *,
    tmp_path: Path | None = None,
) -> argparse.Namespace:  # fmt: skip
    """``argv`` parsed and layered with ``environ`` and, if given, a config file ``toml``."""
    if toml is not None:
        assert tmp_path is not None
        path = tmp_path / "l2pop.toml"
        path.write_text(toml)
        argv = [*argv, "--config", str(path)]
    args = parse(argv)
    resolve(args, environ or {})
    return args


def error(
    argv: list[str], environ: Mapping[str, str] | None = None, toml: str | None = None, *,
    tmp_path: Path | None = None,
) -> str:  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        resolved(argv, environ, toml, tmp_path=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def layers_of(command: str) -> Layers:
    layers: Layers = parse([command])._config_layers
    return layers


# -- precedence ----------------------------------------------------------------------------


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    toml = "max-connections = 100\nqueue-limit = 7\nclient-timeout = 3\n"
    env = {"L2POP_MAX_CONNECTIONS": "200", "L2POP_QUEUE_LIMIT": "8"}
    args = resolved(["server", "--max-connections", "300"], env, toml, tmp_path=tmp_path)
    assert args.max_connections == 300  # flag > environment > file
    assert args.queue_limit == 8  # environment > file
    assert args.client_timeout == 3.0  # file > default, converted like a flag's "3"
    assert args.max_body == 65536  # the default
    assert args.heartbeat_interval == 5.0


def test_without_a_file_nor_environment_the_defaults_stand() -> None:
    args = resolved(["server"])
    assert (args.db, args.listen, args.workers, args.replica) == (
        "sqlite:///l2pop.db",
        "127.0.0.1:9696",
        1,
        None,
    )
    assert (args.log_level, args.log_format) == ("INFO", "text")


def test_the_config_file_can_be_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('replica = "from-file"\n')
    assert resolved(["server"], {"L2POP_CONFIG": str(path)}).replica == "from-file"
    # --config beats L2POP_CONFIG
    other = tmp_path / "other.toml"
    other.write_text('replica = "other"\n')
    args = parse(["server", "--config", str(other)])
    resolve(args, {"L2POP_CONFIG": str(path)})
    assert args.replica == "other"


def test_the_existing_environment_variables_keep_working() -> None:
    env = {"L2POP_DB": "postgresql://x@db/l2pop", "L2POP_REPLICA": "a", "L2POP_WORKERS": "3"}
    args = resolved(["server"], env)
    assert (args.db, args.replica, args.workers) == ("postgresql://x@db/l2pop", "a", 3)
    assert resolved(["server"], {"L2POP_DB": ""}).db == "sqlite:///l2pop.db"  # empty: unset
    assert resolved(AGENT, {"L2POP_LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_values_go_through_the_flags_conversion_and_choices(tmp_path: Path) -> None:
    args = resolved(
        AGENT, toml='heartbeat-interval = 2\nlog-level = "warning"\ndatapath = "memory"\n',
        tmp_path=tmp_path,
    )  # fmt: skip
    assert args.heartbeat_interval == 2.0 and isinstance(args.heartbeat_interval, float)
    assert (args.log_level, args.datapath) == ("WARNING", "memory")


# -- errors --------------------------------------------------------------------------------


def test_a_bad_value_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "l2pop.toml"
    message = error(["server"], toml='max-connections = "many"\n', tmp_path=tmp_path)
    assert message == (f'{path}: max-connections: expected an integer of at least 1, got "many"')
    assert error(["server"], toml="max-body = 5.5\n", tmp_path=tmp_path).startswith(
        f"{path}: max-body: expected an integer"
    )
    assert error(["server"], toml="listen = 9696\n", tmp_path=tmp_path) == (
        f"{path}: listen: expected a string, got 9696"
    )
    assert error(AGENT, toml='datapath = "ovz"\n', tmp_path=tmp_path) == (
        f'{path}: datapath: expected one of linux, memory, ovs, got "ovz"'
    )
    assert error(["server"], toml="workers = 0\n", tmp_path=tmp_path) == (
        f"{path}: workers: expected an integer from 1 to 64, got 0"
    )
    assert error(["server"], toml="workers = true\n", tmp_path=tmp_path).endswith("got true")


def test_a_bad_environment_value_names_the_variable() -> None:
    assert error(["server"], {"L2POP_WORKERS": "lots"}) == (
        'L2POP_WORKERS: expected an integer from 1 to 64, got "lots"'
    )
    assert error(["server"], {"L2POP_LOG_FORMAT": "xml"}).startswith("L2POP_LOG_FORMAT: ")


def test_a_flag_out_of_range_is_refused_as_before() -> None:
    assert error(["server", "--workers", "65"]) == "--workers must be 1 to 64, got 65"
    assert error(["server", "--max-connections", "0"]).startswith("--max-connections must be")


def test_an_unknown_key_is_an_error_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "l2pop.toml"
    assert error(["server"], toml="max-conections = 1\n", tmp_path=tmp_path) == (
        f"{path}: max-conections: unknown option (did you mean max-connections?)"
    )
    # a table is no option either, nor is the internal --worker-of
    assert "unknown option" in error(["server"], toml="[server]\n", tmp_path=tmp_path)
    assert "unknown option" in error(["server"], toml="worker-of = 1\n", tmp_path=tmp_path)
    # an agent key in a server file
    assert "datapath: unknown option" in error(
        ["server"], toml='datapath = "linux"\n', tmp_path=tmp_path
    )


def test_a_missing_or_unparsable_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error(["server", "--config", str(missing)]) == (
        f"{missing}: cannot read the config file: No such file or directory"
    )
    message = error(["server"], toml="listen = \n", tmp_path=tmp_path)
    assert message.startswith(f"{tmp_path / 'l2pop.toml'}: not valid TOML: ")


def test_required_options_may_come_from_any_layer(tmp_path: Path) -> None:
    assert error(["agent", "--host", "h"]) == (
        "--local-ip is required (or L2POP_LOCAL_IP, or local-ip in the config file)"
    )
    assert resolved(["agent", "--host", "h"], {"L2POP_LOCAL_IP": "192.0.2.9"}).local_ip == (
        "192.0.2.9"
    )
    args = resolved(["agent"], toml='host = "h"\nlocal-ip = "192.0.2.8"\n', tmp_path=tmp_path)
    assert (args.host, args.local_ip) == ("h", "192.0.2.8")


# -- groups and inherited options ------------------------------------------------------------


def test_a_token_and_its_file_come_from_one_layer(tmp_path: Path) -> None:
    toml = 'token-file = "/etc/l2pop/agent.token"\n'
    from_file = resolved(AGENT, toml=toml, tmp_path=tmp_path)
    assert (from_file.agent_token, from_file.agent_token_file) == (None, "/etc/l2pop/agent.token")
    flag = resolved([*AGENT, "--token", "t"], {}, toml, tmp_path=tmp_path)
    assert (flag.agent_token, flag.agent_token_file) == ("t", None)
    env = resolved(AGENT, {"L2POP_AGENT_TOKEN": "e"}, toml, tmp_path=tmp_path)
    assert (env.agent_token, env.agent_token_file) == ("e", None)
    # the agent never takes the operator's L2POP_TOKEN
    assert resolved(AGENT, {"L2POP_TOKEN": "admin"}).agent_token is None


def test_a_token_twice_in_one_layer_is_an_error(tmp_path: Path) -> None:
    both = {"L2POP_ADMIN_TOKEN": "a", "L2POP_ADMIN_TOKEN_FILE": "f"}
    assert error(["server"], both) == (
        "L2POP_ADMIN_TOKEN and L2POP_ADMIN_TOKEN_FILE are both set: set one"
    )
    assert error(["server", "--admin-token", "a", "--admin-token-file", "f"]) == (
        "--admin-token and --admin-token-file are mutually exclusive: give one"
    )
    toml = 'admin-token = "a"\nadmin-token-file = "f"\n'
    assert error(["server"], toml=toml, tmp_path=tmp_path).endswith(
        "admin-token and admin-token-file are mutually exclusive: give one"
    )


def test_the_global_server_option_counts_as_a_flag(tmp_path: Path) -> None:
    toml = 'server = "http://from-file:9696"\ntls-ca = "/file/ca.pem"\n'
    assert resolved(AGENT, toml=toml, tmp_path=tmp_path).server == "http://from-file:9696"
    before = resolved(["--server", "http://global:1", *AGENT], toml=toml, tmp_path=tmp_path)
    assert before.server == "http://global:1"
    after = resolved([*AGENT, "--server", "http://after:2"], toml=toml, tmp_path=tmp_path)
    assert after.server == "http://after:2"
    # the default's own text, typed on the command line, is a flag all the same
    typed = "".join(["http://127.0.0.1:", "9696"])
    explicit = resolved(["--server", typed, *AGENT], toml=toml, tmp_path=tmp_path)
    assert explicit.server == "http://127.0.0.1:9696"
    assert resolved(["--tls-ca", "/flag.pem", *AGENT], toml=toml, tmp_path=tmp_path).tls_ca == (
        "/flag.pem"
    )
    assert resolved(AGENT, toml=toml, tmp_path=tmp_path).tls_ca == "/file/ca.pem"


def test_the_global_server_option_from_the_environment_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("L2POP_SERVER", "http://from-env:1")  # read when the parser is built
    toml = 'server = "http://from-file:9696"\n'
    args = resolved(AGENT, {"L2POP_SERVER": "http://from-env:1"}, toml, tmp_path=tmp_path)
    assert args.server == "http://from-env:1"


def test_a_namespace_parsed_without_resolve_holds_the_defaults() -> None:
    """Callers that parse only (tests, tools) see what argparse always gave them."""
    args = parse(AGENT)
    assert (args.datapath, args.bridge, args.heartbeat_interval) == ("linux", "br-l2pop", 5.0)


# -- the docs, the examples, the constants -----------------------------------------------------


@pytest.mark.parametrize("command", ["server", "agent"])
def test_every_option_is_documented(command: str) -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    section = doc.split(f"## `l2pop {command}`")[1].split("\n## ")[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z-]+)` \|.*$", section, re.M)}
    for option in layers_of(command).options.values():
        assert option.key in rows, f"{option.key} is not in docs/configuration.md"
        assert f"`{option.flag}`" in rows[option.key] and f"`{option.env}`" in rows[option.key]
    assert set(rows) == set(layers_of(command).options), "the docs list an option that is gone"
    assert "`L2POP_CONFIG`" in section


@pytest.mark.parametrize("command", ["server", "agent"])
def test_the_example_file_loads_cleanly(command: str) -> None:
    path = ROOT / "contrib" / f"l2pop-{command}.toml"
    args = parse([command, "--config", str(path)])
    resolve(args, {})
    assert args.log_format == "json"
    if command == "agent":
        assert (args.host, args.agent_token_file) == ("compute-1", "/etc/l2pop/agent.token")


def test_the_cli_knows_the_servers_worker_limit() -> None:
    assert cli_server.MAX_WORKERS == workers.MAX_WORKERS


def test_help_names_every_variable() -> None:
    for command in ("server", "agent"):
        for option in layers_of(command).options.values():
            assert option.env in option_help(command, option.dest)


def option_help(command: str, dest: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    [action] = [a for a in sub.choices[command]._actions if a.dest == dest]
    return action.help or ""
