"""Domain errors. Every error names what went wrong so the API can say it plainly.

The REST layer maps them one to one onto HTTP: ``InvalidField`` -> 422,
``NotFound`` -> 404, ``Conflict`` -> 409, ``Forbidden`` -> 403.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class; ``code`` is the stable machine-readable error code."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidField(DomainError):
    """A value is malformed. ``field`` is the request field at fault."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The request is well formed but collides with the current state."""

    code = "conflict"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Forbidden(DomainError):
    code = "forbidden"
