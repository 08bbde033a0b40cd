"""Errors and answers of the REST client (``l2pop.client``, which re-exports the errors).

What a call raises (``ClientError`` and its kinds, defined in ``l2pop.clienterrors``) and how
an answer becomes a model (``parse``, ``parse_list``, ``next_page``); nothing here knows a
route.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from l2pop.clienterrors import ApiError, ClientError, UnexpectedAnswer, Unreachable, one_line
from l2pop.tlsconfig import tls_failure

__all__ = [
    "ApiError",
    "ClientError",
    "Model",
    "UnexpectedAnswer",
    "Unreachable",
    "list_adapter",
    "next_page",
    "parse",
    "parse_list",
    "undocumented",
    "unreachable",
]

Model = TypeVar("Model", bound=BaseModel)


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
    text = one_line(re.sub(r"^\[Errno -?\d+\]\s*", "", text.strip()))
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
