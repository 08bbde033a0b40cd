"""One error shape for every failure: ``{"error": {"code", "message", "field"?}}``.

Domain errors map to 422/404/409/403; request validation to 422 naming the field (the body,
a body field, a path or a query parameter); a body that cannot be read as JSON (invalid
UTF-8, nested too deep, a number too long) to 422 naming ``body``; a store that cannot be
reached to 503; anything unexpected to 500 without leaking internals (it is logged with its
traceback). The codes are ``l2pop.wire.api.ERROR_CODES``; the OpenAPI document describes
the same body (``ErrorBody``) for every status.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from l2pop.model import Conflict, DomainError, Forbidden, InvalidField, NotFound
from l2pop.store import StoreUnavailable
from l2pop.wire import ErrorBody
from l2pop.wire.api import CODE_OF_STATUS, ErrorDetail

log = logging.getLogger("l2pop.server")

STATUS_OF: dict[type[DomainError], int] = {
    InvalidField: 422,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
}


#: how long a client should wait before retrying after a 503
RETRY_AFTER_SECONDS = 1
_MAX_ECHO = 200  # characters of a client-supplied field name or message echoed back
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class Unauthorized(DomainError):
    code = "unauthorized"


def printable(text: str, limit: int = 4 * _MAX_ECHO) -> str:
    """``text`` safe to put in a JSON answer and a log line: control characters and lone
    surrogates (which cannot be encoded as UTF-8) escaped, and at most ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: Any = None
) -> JSONResponse:
    detail = ErrorDetail(
        code=code,  # type: ignore[arg-type]  # one of ERROR_CODES, checked by a unit test
        message=printable(message),
        field=None if field is None else printable(field, _MAX_ECHO),
    )
    body = ErrorBody(error=detail).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    """``("body", "fixed_ips", 1)`` -> ``fixed_ips[1]``; the location prefix is dropped."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _validation_message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "missing":
        return "is required"
    if err.get("type") == "extra_forbidden":
        return "is not a known field"
    if err.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    return msg


def _loc(err: dict[str, Any]) -> tuple[Any, ...]:
    if err.get("type") == "json_invalid":
        return ("body",)  # FastAPI adds the offset of the syntax error
    return tuple(err.get("loc", ("body",)))


def invalid_body(exc: BaseException) -> JSONResponse:
    """A body that is not JSON text at all (invalid UTF-8, nesting deeper than the parser's
    recursion limit, an integer longer than Python converts): malformed input, 422."""
    reason = {
        UnicodeDecodeError: "is not valid UTF-8",
        RecursionError: "is nested too deeply",
    }.get(type(exc), "is not valid JSON")
    return error_response(422, "invalid", f"body: the request body {reason}", "body")


_path_methods: dict[int, list[tuple[re.Pattern[str], frozenset[str]]]] = {}


def _template_regex(template: str) -> re.Pattern[str]:
    """A path template (``.../ports/{port_id}``) -> a regex matching any one segment in place
    of the name."""
    parts = template.split("/")
    return re.compile("/".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def allowed_methods(request: Request) -> str | None:
    """Every method the request's path answers to, from the OpenAPI document (Starlette
    names only the first route it tried, and FastAPI has one route per method); None for
    a path the document does not describe."""
    app = request.app
    table = _path_methods.get(id(app))
    if table is None:
        table = [
            (_template_regex(template), frozenset(m.upper() for m in operations))
            for template, operations in app.openapi().get("paths", {}).items()
        ]
        _path_methods[id(app)] = table
    path = request.scope.get("path", "")
    methods: set[str] = set().union(*(m for regex, m in table if regex.fullmatch(path)))
    return ", ".join(sorted(methods)) if methods else None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
            return error_response(401, exc.code, exc.message, headers=headers)
        status = next((s for t, s in STATUS_OF.items() if isinstance(exc, t)), 400)
        return error_response(status, exc.code, exc.message, getattr(exc, "field", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(_loc(first))
        message = f"{field}: {_validation_message(first)}"
        if len(errors) > 1:
            others = sorted({_field_of(_loc(e)) for e in errors[1:]} - {field})
            if others:
                message += f" (also invalid: {', '.join(others)})"
        return error_response(422, "invalid", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, ValueError | RecursionError):
            # FastAPI's "There was an error parsing the body": JSON it could not decode
            return invalid_body(cause)
        code = CODE_OF_STATUS.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning(
            "store unavailable on %s %s: %s", request.method, request.url.path, printable(str(exc))
        )
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return error_response(
            503, "unavailable", "the store is unavailable; retry later", None, headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, printable(request.url.path))
        return error_response(500, "error", "internal error; see the server log")
