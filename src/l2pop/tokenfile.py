"""Tokens from files: a command line is readable by every local user in /proc, a file need not be.

Each token option ``--X`` (``--token``, ``--admin-token``) has a ``--X-file`` twin, and its
environment variable ``ENV`` an ``ENV_FILE`` twin. ``resolve_token`` picks one: the command
line before the environment; naming both a token and a file at the same level is an error.
A file holds the token, optionally followed by one newline.

Every failure is a ``TokenFileError`` whose message is one line naming the file or options.
"""

from __future__ import annotations

import os
from pathlib import Path


class TokenFileError(Exception):
    """A token that cannot be had as configured; the message is one line."""


def read_token_file(path: str) -> str:
    """The token held by ``path``: its text without one trailing newline, never empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TokenFileError(f"cannot read token file {path}: {reason}") from None
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        raise TokenFileError(f"token file {path} is empty")
    if "\n" in text or "\r" in text:
        raise TokenFileError(f"token file {path} holds more than one line")
    return text


def resolve_token(
    token: str | None, token_file: str | None, *, option: str, env: str
) -> str | None:
    """The token from ``option``/``option-file``, else from ``env``/``env_FILE``; None if none."""
    if token and token_file:
        raise TokenFileError(f"{option} and {option}-file are mutually exclusive: give one")
    if token_file:
        return read_token_file(token_file)
    if token:
        return token
    env_token = os.environ.get(env) or None
    env_file = os.environ.get(f"{env}_FILE") or None
    if env_token and env_file:
        raise TokenFileError(f"{env} and {env}_FILE are both set: set one")
    if env_file:
        return read_token_file(env_file)
    return env_token
