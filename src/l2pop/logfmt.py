"""How the server and the agents log: ``--log-format text|json``, on stderr.

- **text** (the default): one readable line per event, the format each command always had.
- **json**: one JSON object per line, for a log pipeline: ``time`` (RFC 3339, UTC, to the
  millisecond), ``level``, ``logger``, ``message``, the context fields ``host``, ``network``,
  ``port`` and ``revision`` where the call site passed them (``extra={"host": ...}``), and
  ``exc``: the formatted exception, newlines escaped like any string, so a traceback stays
  one line. Python warnings are routed through logging too, so that every line parses.

Logs go to stderr, as before: stdout carries the few lines programs read (the agent's
``control listening on HOST:PORT``), and under systemd both streams reach the journal.
uvicorn's loggers are left unconfigured by the server (``log_config=None``), so they
propagate here and come out in the same format.

Importing this module is cheap (the CLI takes ``LOG_FORMATS`` and ``LOG_LEVELS`` from it).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: the context fields a log call may carry in ``extra``; only these reach a JSON line
FIELDS = ("host", "network", "port", "revision")
#: the agents' text format (the server's is ``SERVER_TEXT``)
AGENT_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SERVER_TEXT = "%(asctime)s %(name)s %(message)s"


def rfc3339(created: float) -> str:
    """``2026-12-02T00:31:55.123Z`` for a ``time.time()`` value."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module docstring for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                plain = isinstance(value, str | int | float | bool)
                entry[name] = value if plain else str(value)  # a UUID, an IP address
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: a stray surrogate in a message cannot break the write
        return json.dumps(entry, default=str)


class Context(logging.Filter):
    """Sets the fields a record lacks to the process's own (``l2pop agent``: its host), so
    every line of a one-host agent names the host, the datapath's and the reconciler's too."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        super().__init__()
        self.fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self.fields.items():
            if record.__dict__.get(name) is None:
                setattr(record, name, value)
        return True


def configure(
    level: str,
    log_format: str = "text",
    *,
    text: str = AGENT_TEXT,
    stream: TextIO | None = None,
    context: Mapping[str, object] | None = None,
) -> None:
    """Log records of ``level`` and above to ``stream`` (stderr) in ``log_format``;
    ``context``: fields every record gets unless its call site set them.

    Like ``logging.basicConfig``, which it calls, it does nothing to a root logger that
    already has handlers (an in-process test's, say).
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: choose one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text))
    if context:
        handler.addFilter(Context(context))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if log_format == "json":
        logging.captureWarnings(True)  # a warning's own text is several lines
