"""``l2pop.logfmt``: JSON log lines (fields, context, exceptions on one line)."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import uuid

import pytest

from l2pop.logfmt import Context, JsonFormatter, configure, rfc3339


def record(msg: str = "agent %s connected", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("l2pop.server.channel", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_record_is_one_json_object_with_the_fields_that_apply() -> None:
    line = JsonFormatter().format(record("agent %s connected", "h1", host="h1", revision=4))
    entry = json.loads(line)
    assert entry == {
        "time": entry["time"],
        "level": "INFO",
        "logger": "l2pop.server.channel",
        "message": "agent h1 connected",
        "host": "h1",
        "revision": 4,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert "network" not in entry and "port" not in entry  # absent, not null


def test_rfc3339_is_utc() -> None:
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500Z"


def test_an_exception_is_one_string_field_on_one_line() -> None:
    rec = record("sync failed")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    exc = json.loads(line)["exc"]
    assert exc.startswith("Traceback") and "ValueError: bad\nthing" in exc


def test_values_that_are_not_json_become_strings() -> None:
    nid = uuid.UUID(int=1)
    assert json.loads(JsonFormatter().format(record("x", network=nid)))["network"] == str(nid)


def test_context_fills_what_the_call_site_left_out() -> None:
    ctx = Context({"host": "compute-1"})
    plain, own = record("x"), record("y", host="other")
    assert ctx.filter(plain) and ctx.filter(own)
    assert (plain.__dict__["host"], own.__dict__["host"]) == ("compute-1", "other")


def test_configure_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="choose one of text, json"):
        configure("INFO", "xml", stream=io.StringIO())


def test_uvicorn_logs_through_ours() -> None:
    """The server leaves uvicorn's logging unconfigured: its records reach the root
    handler (``configure``'s), in the same format, JSON included."""
    from l2pop.server.main import ServerOptions, uvicorn_config

    config = uvicorn_config(object(), ServerOptions("sqlite:///x.db", "127.0.0.1", 1, None))
    assert config.log_config is None
    error = logging.getLogger("uvicorn.error")
    assert error.propagate and not error.handlers
