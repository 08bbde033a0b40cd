"""Agent tokens can be pasted after ``--token``: they never start with a dash."""

from __future__ import annotations

from l2pop.server.usecases import new_token


def test_tokens_never_start_with_a_dash_and_are_distinct() -> None:
    tokens = [new_token() for _ in range(5000)]  # about 78 dash-first draws are expected
    assert not any(t.startswith("-") for t in tokens)
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) == 43 for t in tokens)
