"""What a REST call raises (``ClientError`` and its kinds), apart from the clients.

Kept free of httpx and of the REST models so the agent, which makes one kind of call (its
port status report, ``l2pop.agent.statushttp``), raises the same errors as ``l2pop.client``
without importing either: ``ApiError.of`` reads any answer with httpx's ``Response``
attributes (``status_code``, ``headers``, ``content``, ``text``, ``reason_phrase``) and
imports the ``ErrorBody`` model only when an error answer comes. ``l2pop.client`` (through
``l2pop._answers``) re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class ClientError(Exception):
    """A call that did not get a usable answer; ``message`` is one line fit to print."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(ClientError):
    """No answer at all: connection refused, timed out, TLS refused, bad URL.

    ``kind`` names the transport failure (the ``httpx`` exception's class, e.g.
    ``ConnectError`` or ``ReadTimeout``), for callers that count failures by kind.
    """

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class UnexpectedAnswer(ClientError):
    """A success answer (``status`` < 400) whose body is not the route's documented model."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Answer(Protocol):
    """What ``ApiError.of`` reads of an answer (an ``httpx.Response`` has it all)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...

    @property
    def reason_phrase(self) -> str: ...


class ApiError(ClientError):
    """The server answered with an error status.

    ``code`` is one of ``wire.api.ERROR_CODES``; ``field`` names the request field, path or
    query parameter at fault when the server named one; ``retry_after`` is the
    ``Retry-After`` seconds of a 503, when given.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        retry_after: float | None = None,
        from_body: bool = True,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = message
        self.field = field
        self.retry_after = retry_after
        if from_body:
            text = message if not field or message.startswith(field) else f"{field}: {message}"
            summary = f"{text} ({status} {code})" if code else f"{text} ({status})"
        else:
            summary = f"server answered HTTP {status}: {message}"
        super().__init__(summary)

    @classmethod
    def of(cls, response: Answer) -> ApiError:
        """The error an answer with status >= 400 carries."""
        # the REST models (pydantic) only once an error answer has come: an agent that
        # never gets one never builds them
        from pydantic import ValidationError

        from l2pop.wire.api import CODE_OF_STATUS, ErrorBody

        retry_after = _seconds(response.headers.get("Retry-After"))
        try:
            detail = ErrorBody.model_validate_json(response.content).error
        except ValidationError:
            text = one_line(response.text) if response.text else response.reason_phrase
            code = CODE_OF_STATUS.get(response.status_code, "error")
            return cls(
                response.status_code, code, text, None, retry_after=retry_after, from_body=False
            )
        return cls(
            response.status_code,
            detail.code,
            one_line(detail.message, 400),
            detail.field,
            retry_after=retry_after,
        )


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (whitespace runs made one space), cut to ``limit`` with ``...``."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
