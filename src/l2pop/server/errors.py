"""One error shape for every failure: ``{"error": {"code", "message", "field"?}}``.

Domain errors map to 422/404/409/403; request validation to 422 naming the field; anything
unexpected to 500 without leaking internals (it is logged with its traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from l2pop.model import Conflict, DomainError, Forbidden, InvalidField, NotFound

log = logging.getLogger("l2pop.server")

STATUS_OF: dict[type[DomainError], int] = {
    InvalidField: 422,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
}

_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}


class Unauthorized(DomainError):
    code = "unauthorized"


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: Any = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status, headers=headers)


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
        field = _field_of(tuple(first.get("loc", ("body",))))
        message = f"{field}: {_validation_message(first)}"
        if len(errors) > 1:
            others = sorted({_field_of(tuple(e.get("loc", ()))) for e in errors[1:]} - {field})
            if others:
                message += f" (also invalid: {', '.join(others)})"
        return error_response(422, "invalid", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "error", "internal error; see the server log")
