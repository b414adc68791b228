"""Retry policy for retriable store errors (ConcurrencyConflict): re-read and re-apply."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConflictRetry:
    """Exponential backoff with full jitter, bounded by `max_attempts` and `max_delay`."""

    max_attempts: int = 5
    base_delay: float = 0.005
    multiplier: float = 2.0
    max_delay: float = 0.5
    jitter: float = 1.0  # 1.0 = full jitter: replicas that collided do not collide again in step

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based)."""
        ceiling = min(self.base_delay * self.multiplier ** (attempt - 1), self.max_delay)
        spread = (rng or random).random() * self.jitter
        return ceiling * (1 - spread)
