"""Token.moved_to: the walker's fast path must equal the field-by-field replace it stands for."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields

import pytest

from process_engine.domain.instance import InstanceState, Token, state_of


def test_moved_to_equals_replace_with_wait_timer_and_attempt_cleared() -> None:
    token = Token("t3", "service", "action", "timer-1", 2, 4, (("fork:t1:1", 2),))
    expected = token._replace(activity_id="next", waiting=None, timer_id=None, attempt=0)
    assert token.moved_to("next") == expected


def test_freeze_knows_every_instance_field() -> None:
    # Run.freeze and new_instance build the state positionally (state_of).
    assert [f.name for f in fields(InstanceState)] == [
        "id", "definition_id", "definition_version", "status", "variables", "tokens", "correlation_key",
        "started_at", "completed_at", "error", "next_token", "visits", "parked", "compensations", "compensating",
        "recorded", "version", "state_version", "trace",
    ]


def test_state_of_equals_the_dataclass_and_stays_frozen() -> None:
    values = ("i", "d", 2, "running", {"a": 1}, (Token("t1", "a"),), "k", None, None, None, 2, {"a": 1}, (), (), None, {}, 3, 1, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    built = state_of(*values)
    assert built == InstanceState(*values)
    with pytest.raises(FrozenInstanceError):
        built.status = "failed"  # type: ignore[misc]
    with pytest.raises(TypeError, match="19 values"):
        state_of(*values[:-1])


def test_moved_to_knows_every_field() -> None:
    # A new Token field must be handled in moved_to (it builds the token positionally).
    assert list(Token._fields) == ["id", "activity_id", "waiting", "timer_id", "attempt", "visit", "forks"]
