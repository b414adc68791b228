"""The conflict retry policy: exponential, capped, jittered."""

from __future__ import annotations

import random

from process_engine.runtime.retry import ConflictRetry


def test_delays_grow_exponentially_up_to_the_cap_without_jitter() -> None:
    policy = ConflictRetry(base_delay=0.01, multiplier=2, max_delay=0.05, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.01, 0.02, 0.04, 0.05, 0.05]


def test_full_jitter_stays_within_the_ceiling_and_varies() -> None:
    policy = ConflictRetry(base_delay=0.1, multiplier=2, max_delay=1.0, jitter=1.0)
    rng = random.Random(4)
    delays = [policy.delay(3, rng) for _ in range(50)]
    assert all(0 <= d <= 0.4 for d in delays)
    assert len(set(delays)) > 40
