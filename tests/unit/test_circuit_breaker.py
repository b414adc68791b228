"""CircuitBreaker and BreakerBoard with an injected clock: no sleeping."""

from __future__ import annotations

import pytest

from process_engine.adapters.actions.circuit_breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerBoard,
    CircuitBreaker,
    CircuitOpenError,
)
from process_engine.domain.errors import ActionError


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failing(retriable: bool = True):
    def call():
        raise ActionError("target down", retriable=retriable)
    return call


def fail_times(breaker: CircuitBreaker, count: int) -> None:
    for _ in range(count):
        with pytest.raises(ActionError):
            breaker.call(failing())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock) -> CircuitBreaker:
    return CircuitBreaker("http://hooks:80", failure_threshold=3, cooldown_seconds=30, clock=clock)


def test_stays_closed_below_the_threshold(breaker):
    fail_times(breaker, 2)
    assert breaker.state == CLOSED
    assert breaker.call(lambda: "ok") == "ok"


def test_a_success_resets_the_consecutive_count(breaker):
    fail_times(breaker, 2)
    breaker.call(lambda: None)
    fail_times(breaker, 2)
    assert breaker.state == CLOSED


def test_opens_after_n_consecutive_failures_and_refuses_without_calling(breaker, clock):
    fail_times(breaker, 3)
    calls = []
    clock.now += 10

    with pytest.raises(CircuitOpenError) as caught:
        breaker.call(lambda: calls.append(1))

    assert breaker.state == OPEN
    assert calls == []
    assert caught.value.retriable
    assert caught.value.retry_after == pytest.approx(20)
    assert "circuit open for http://hooks:80 until 20.0s from now" in str(caught.value)


def test_half_open_after_the_cooldown_lets_one_trial_through(breaker, clock):
    fail_times(breaker, 3)
    clock.now += 30
    assert breaker.state == HALF_OPEN

    breaker.before_call()  # the trial is in flight
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "second caller")


def test_a_successful_trial_closes_it(breaker, clock):
    fail_times(breaker, 3)
    clock.now += 30
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state == CLOSED


def test_a_failed_trial_opens_it_for_another_cooldown(breaker, clock):
    fail_times(breaker, 3)
    clock.now += 30
    fail_times(breaker, 1)
    assert breaker.state == OPEN
    clock.now += 29
    assert breaker.state == OPEN
    clock.now += 1
    assert breaker.state == HALF_OPEN


def test_non_retriable_errors_mean_the_target_answered(breaker):
    for _ in range(5):
        with pytest.raises(ActionError):
            breaker.call(failing(retriable=False))
    assert breaker.state == CLOSED


def test_an_unexpected_exception_frees_the_trial_slot(breaker, clock):
    fail_times(breaker, 3)
    clock.now += 30
    with pytest.raises(KeyError):
        breaker.call(lambda: {}["boom"])
    assert breaker.call(lambda: "trial again") == "trial again"


def test_board_keeps_one_breaker_per_target(clock):
    board = BreakerBoard(failure_threshold=1, cooldown_seconds=5, clock=clock)
    with pytest.raises(ActionError):
        board.call("mqtt://a:1883", failing())

    assert board.breaker("mqtt://a:1883") is board.breaker("mqtt://a:1883")
    assert board.call("mqtt://b:1883", lambda: 42) == 42
    assert board.states() == {"mqtt://a:1883": OPEN, "mqtt://b:1883": CLOSED}


def test_threshold_must_be_positive():
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
