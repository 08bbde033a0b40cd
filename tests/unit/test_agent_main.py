"""The agent's datapath factory (the one place that names concrete datapaths) and the
options that reach it from ``l2pop agent``."""

from __future__ import annotations

import argparse
import builtins
import sys
from pathlib import Path
from typing import Any

import pytest

from l2pop.agent import main as agent_main
from l2pop.agent.main import DATAPATHS, DatapathOptions, UsageError, make_datapath
from l2pop.cli import agent as cli_agent
from l2pop.datapath.abc import Datapath

AGENT = ["agent", "--host", "h", "--local-ip", "192.0.2.1"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli_agent.register(parser.add_subparsers())
    return parser


def test_make_datapath_by_name() -> None:
    dp = make_datapath("memory", DatapathOptions("192.0.2.1"))
    assert isinstance(dp, Datapath) and dp.name == "memory" and dp.blocking is False
    dp.close()
    with pytest.raises(UsageError, match="choose one of linux, memory, ovs"):
        make_datapath("nope", DatapathOptions("192.0.2.1"))


def test_the_cli_offers_every_datapath_of_the_factory() -> None:
    """The CLI keeps its own list (it must not import the agent to build its parser): the two
    must agree, so a new datapath cannot be added to one only."""
    parser = _parser()
    args = parser.parse_args([*AGENT, "--datapath", "memory"])
    assert args.datapath == "memory"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    [option] = [a for a in sub.choices["agent"]._actions if a.dest == "datapath"]
    assert option.choices is not None and sorted(option.choices) == sorted(DATAPATHS)
    # fault injection is for the swarm (a test tool) only
    assert "test_hooks" not in vars(args)
    swarm = parser.parse_args(["agent-swarm", "--hosts-file", "f", "--test-hooks"])
    assert swarm.test_hooks is True


def test_ovs_options_default_to_a_packaged_open_vswitch() -> None:
    options = cli_agent.datapath_options(_parser().parse_args(AGENT))
    assert options == DatapathOptions(
        vtep_ip="192.0.2.1",
        ovs_db="unix:/var/run/openvswitch/db.sock",
        ovs_rundir="/var/run/openvswitch",
        bridge="br-l2pop",
        ovs_datapath_type="system",
    )
    assert options.ovs_db_path == "/var/run/openvswitch/db.sock"


def test_ovs_options_are_parsed() -> None:
    args = _parser().parse_args(
        [
            *AGENT,
            "--datapath", "ovs",
            "--ovs-db", "unix:/tmp/h1/db.sock",
            "--ovs-rundir", "/tmp/h1",
            "--bridge", "br-test",
            "--ovs-datapath-type", "netdev",
        ]
    )  # fmt: skip
    assert args.datapath == "ovs"
    options = cli_agent.datapath_options(args)
    assert (options.ovs_db, options.ovs_rundir) == ("unix:/tmp/h1/db.sock", "/tmp/h1")
    assert (options.bridge, options.ovs_datapath_type) == ("br-test", "netdev")
    assert options.ovs_db_path == "/tmp/h1/db.sock"
    tcp = cli_agent.datapath_options(
        _parser().parse_args([*AGENT, "--ovs-db", "tcp:192.0.2.9:6640"])
    )
    assert tcp.ovs_db_path is None


def test_an_unknown_ovs_datapath_type_is_a_parse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args([*AGENT, "--ovs-datapath-type", "dpdk"])
    assert exc.value.code == 2
    assert "invalid choice: 'dpdk'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ovs_datapath_type", "dpdk", "OVS datapath type"),
        ("ovs_db", "/var/run/openvswitch/db.sock", "OVSDB address"),
        ("ovs_db", "unix:", "OVSDB address"),
        ("bridge", "", "bridge name"),
        ("bridge", "a-bridge-name-too-long", "bridge name"),
    ],
)
def test_options_open_vswitch_would_refuse_are_value_errors(
    field: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DatapathOptions("192.0.2.1", **{field: value})


def test_bad_ovs_options_exit_2_before_the_agent_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_agent(*_args: Any, **_kw: Any) -> int:
        raise AssertionError("run_agent must not be reached")

    monkeypatch.setattr(agent_main, "run_agent", no_agent)
    args = _parser().parse_args([*AGENT, "--token", "t", "--ovs-db", "db.sock"])
    assert args.func(args) == 2
    assert "OVSDB address 'db.sock'" in capsys.readouterr().err


def _hide_module(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``import name`` (and its submodules) fail as on a host without it."""
    real_import = builtins.__import__
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, mod)

    def fake_import(mod: str, *args: Any, **kw: Any) -> Any:
        if mod == name or mod.startswith(name + "."):
            raise ModuleNotFoundError(f"No module named {mod!r}", name=mod)
        return real_import(mod, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_ovs_without_its_python_library_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_module(monkeypatch, "ovs")
    # the datapath modules that import it, whatever earlier tests imported already
    for name in ("l2pop.datapath.ovs", "l2pop.datapath._ovsdb"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    # whether l2pop.datapath.ovs exists in this build or not, the user is told what to do
    with pytest.raises(UsageError, match=r"ovs datapath (needs|is not available)"):
        make_datapath("ovs", DatapathOptions("192.0.2.1"))


def test_ovs_without_a_running_open_vswitch_is_a_usage_error(tmp_path: Path) -> None:
    pytest.importorskip("l2pop.datapath.ovs", reason="the ovs datapath is not in this build")
    options = DatapathOptions(
        "192.0.2.1", ovs_db=f"unix:{tmp_path}/db.sock", ovs_rundir=str(tmp_path)
    )
    with pytest.raises(UsageError, match="no Open vSwitch database at unix:"):
        make_datapath("ovs", options)
    gone = DatapathOptions(
        "192.0.2.1", ovs_db=f"unix:{tmp_path}/db.sock", ovs_rundir="/nonexistent"
    )
    (tmp_path / "db.sock").touch()
    with pytest.raises(UsageError, match="--ovs-rundir /nonexistent is not a directory"):
        make_datapath("ovs", gone)
