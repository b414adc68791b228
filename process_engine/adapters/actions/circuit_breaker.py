"""Circuit breakers: stop hammering a target (broker, webhook host) that keeps failing.

A breaker is closed while calls succeed. After `failure_threshold` consecutive
failures it opens: calls fail at once with `CircuitOpenError` (a retriable
ActionError, so the outbox tries again later) without touching the target. After
`cooldown_seconds` it is half-open: one trial call goes through; success closes
it, failure opens it for another cool-down.

Only retriable ActionErrors count as failures. A non-retriable error (an HTTP
404, a bad config) means the target answered, so it counts as a success.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from process_engine.domain.errors import ActionError

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitOpenError(ActionError):
    """A call was refused because the target's breaker is open."""

    def __init__(self, target: str, retry_after: float, failures: int):
        self.target = target
        self.retry_after = retry_after
        super().__init__(
            f"circuit open for {target} until {retry_after:.1f}s from now "
            f"(after {failures} consecutive failures)",
            retriable=True,
        )


class CircuitBreaker:
    """Closed → open after N consecutive failures → half-open after a cool-down."""

    def __init__(
        self,
        target: str,
        failure_threshold: int = 5,
        cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.target = target
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        """`closed`, `open` or `half_open`, as of now."""
        with self._lock:
            return self._state_locked()

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` through the breaker, recording its outcome.

        Raises:
            CircuitOpenError: the breaker is open; `function` was not called.
        """
        self.before_call()
        try:
            result = function()
        except ActionError as error:
            if error.retriable:
                self.record_failure()
            else:
                self.record_success()
            raise
        except BaseException:
            # Not a target failure we understand (a bug, an interrupt): free the trial slot.
            self._release_trial()
            raise
        self.record_success()
        return result

    def before_call(self) -> None:
        """Let a call through, or raise CircuitOpenError without calling the target."""
        with self._lock:
            state = self._state_locked()
            if state == CLOSED:
                return
            if state == HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return
            raise CircuitOpenError(self.target, self._retry_after_locked(), self._failures)

    def record_success(self) -> None:
        """The target answered: close the breaker."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        """The target failed: count it, and open the breaker at the threshold."""
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._trial_running = False

    def _release_trial(self) -> None:
        with self._lock:
            self._trial_running = False

    def _state_locked(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self.cooldown_seconds:
            return HALF_OPEN
        return OPEN

    def _retry_after_locked(self) -> float:
        if self._opened_at is None:
            return 0.0
        # A half-open breaker with its trial in flight: the caller may retry soon.
        return max(0.0, self._opened_at + self.cooldown_seconds - self._clock())


class BreakerBoard:
    """One CircuitBreaker per target key, created on first use with shared settings."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, target: str) -> CircuitBreaker:
        """The breaker for `target` (e.g. `https://hooks.example.com:443`)."""
        with self._lock:
            breaker = self._breakers.get(target)
            if breaker is None:
                breaker = CircuitBreaker(
                    target, self.failure_threshold, self.cooldown_seconds, self._clock
                )
                self._breakers[target] = breaker
            return breaker

    def call(self, target: str, function: Callable[[], T]) -> T:
        """Run `function` through the breaker of `target`."""
        return self.breaker(target).call(function)

    def states(self) -> dict[str, str]:
        """Every known target and its breaker state, for health checks and metrics."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {breaker.target: breaker.state for breaker in breakers}
