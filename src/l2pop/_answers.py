"""Errors and answers of the REST client (``l2pop.client``, which re-exports the errors).

What a call raises (``ClientError`` and its kinds) and how an answer becomes a model
(``parse``, ``parse_list``, ``next_page``); nothing here knows a route.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from l2pop.tlsconfig import tls_failure
from l2pop.wire import ErrorBody
from l2pop.wire.api import CODE_OF_STATUS

Model = TypeVar("Model", bound=BaseModel)


# -- errors -----------------------------------------------------------------------------


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
    def of(cls, response: httpx.Response) -> ApiError:
        """The error an answer with status >= 400 carries."""
        retry_after = _seconds(response.headers.get("Retry-After"))
        try:
            detail = ErrorBody.model_validate_json(response.content).error
        except ValidationError:
            text = _one_line(response.text) if response.text else response.reason_phrase
            code = CODE_OF_STATUS.get(response.status_code, "error")
            return cls(
                response.status_code, code, text, None, retry_after=retry_after, from_body=False
            )
        return cls(
            response.status_code,
            detail.code,
            _one_line(detail.message, 400),
            detail.field,
            retry_after=retry_after,
        )


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def unreachable(base_url: str, exc: httpx.TransportError) -> Unreachable:
    reason = _transport_reason(exc)
    return Unreachable(f"cannot reach l2pop server at {base_url}: {reason}", type(exc).__name__)


def _transport_reason(exc: httpx.TransportError) -> str:
    """``[Errno 111] Connection refused`` -> ``connection refused``."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    tls = tls_failure(exc)
    if tls is not None:
        return tls
    text = str(exc) or type(exc).__name__
    text = _one_line(re.sub(r"^\[Errno -?\d+\]\s*", "", text.strip()))
    return text[:1].lower() + text[1:]


# -- answers ----------------------------------------------------------------------------


def parse(model: type[Model], response: httpx.Response, method: str, path: str) -> Model:
    """The answer decoded as ``model``."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        raise undocumented(response, method, path) from None


def parse_list(model: type[Model], response: httpx.Response, method: str, path: str) -> list[Model]:
    """The answer decoded as a list of ``model``."""
    try:
        return list_adapter(model).validate_json(response.content)
    except ValidationError:
        raise undocumented(response, method, path) from None


_adapters: dict[type[BaseModel], TypeAdapter[Any]] = {}


def list_adapter(model: type[Model]) -> TypeAdapter[list[Model]]:
    adapter = _adapters.get(model)
    if adapter is None:
        adapter = _adapters[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return adapter


def undocumented(response: httpx.Response, method: str, path: str) -> UnexpectedAnswer:
    return UnexpectedAnswer(
        f"server at {response.url.scheme}://{response.url.netloc.decode()} answered "
        f"{method} {path} with content that is not the documented answer",
        response.status_code,
    )


def next_page(response: httpx.Response, seen: set[str]) -> str | None:
    """The absolute URL of the next page (``Link: rel="next"``), or None after the last.

    A server naming a page it already answered would make the loop endless: that is an
    answer that is not the documented one, and raises ``ClientError``.
    """
    following = response.links.get("next", {}).get("url")
    if not following:
        return None
    url = str(response.url.join(following))
    if url in seen:
        raise ClientError(f"server at {response.url.host} names page {url} twice")
    seen.add(url)
    return url
