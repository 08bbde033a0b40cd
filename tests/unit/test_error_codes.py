"""Every ``error.code`` the server can answer is in the published enum, and no other."""

from __future__ import annotations

from typing import get_args

from l2pop.wire.api import CODE_OF_STATUS, ERROR_CODES, ErrorCode


def test_the_error_code_enum_is_complete() -> None:
    published = set(get_args(ErrorCode))
    assert published == set(ERROR_CODES)
    assert set(CODE_OF_STATUS.values()) <= published
    # what the request guard in front of the routes answers
    assert {"bad_request", "unauthorized", "too_large", "timeout"} <= published
    assert "error" in published  # 500
