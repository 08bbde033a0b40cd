"""The agent's datapath factory: the one place that names concrete datapaths."""

from __future__ import annotations

import argparse

import pytest

from l2pop.agent.main import DATAPATHS, UsageError, make_datapath
from l2pop.cli import agent as cli_agent
from l2pop.datapath.abc import Datapath


def test_make_datapath_by_name() -> None:
    dp = make_datapath("memory", "192.0.2.1")
    assert isinstance(dp, Datapath) and dp.name == "memory" and dp.blocking is False
    dp.close()
    with pytest.raises(UsageError, match="choose one of linux, memory"):
        make_datapath("nope", "192.0.2.1")


def test_the_cli_offers_every_datapath_of_the_factory() -> None:
    """The CLI keeps its own list (it must not import the agent to build its parser): the two
    must agree, so a new datapath cannot be added to one only."""
    parser = argparse.ArgumentParser()
    cli_agent.register(parser.add_subparsers())
    args = parser.parse_args(
        ["agent", "--host", "h", "--local-ip", "192.0.2.1", "--datapath", "memory"]
    )
    assert args.datapath == "memory"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    [option] = [a for a in sub.choices["agent"]._actions if a.dest == "datapath"]
    assert option.choices is not None and sorted(option.choices) == sorted(DATAPATHS)
    # fault injection is for the swarm (a test tool) only
    assert "test_hooks" not in vars(args)
    swarm = parser.parse_args(["agent-swarm", "--hosts-file", "f", "--test-hooks"])
    assert swarm.test_hooks is True
