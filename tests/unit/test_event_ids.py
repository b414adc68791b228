"""Time-ordered event ids: canonical UUIDv7 text that sorts in the order it was made."""

from __future__ import annotations

import uuid

import pytest

from process_engine.runtime import event_ids
from process_engine.runtime.event_ids import EventIdGenerator


@pytest.fixture
def frozen_ms(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A clock stuck at one millisecond unless the test moves it."""
    now = [1_800_000_000_000]
    monkeypatch.setattr(event_ids.time, "time_ns", lambda: now[0] * 1_000_000)
    return now


def test_ids_are_canonical_version_7_uuids_in_the_order_they_were_made() -> None:
    generator = EventIdGenerator()
    ids = [generator.new() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for text in ids[:50] + ids[-50:]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_the_timestamp_is_the_millisecond_the_id_was_made(frozen_ms: list[int]) -> None:
    text = EventIdGenerator().new()
    assert int(uuid.UUID(text).hex[:12], 16) == frozen_ms[0]


def test_a_carry_out_of_the_low_digits_reaches_the_rest_of_the_id(
    frozen_ms: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_ids.random, "getrandbits", lambda bits: (5 << 32) - 3)  # 3 before a wrap
    generator = EventIdGenerator()
    ids = [generator.new() for _ in range(6)]
    assert ids == sorted(ids) and len(set(ids)) == 6
    counters = [int(uuid.UUID(text).hex[13:16] + uuid.UUID(text).hex[17:], 16) for text in ids]
    assert counters == [(5 << 32) - 3 + n for n in range(6)]


def test_ids_keep_increasing_when_the_clock_steps_back(frozen_ms: list[int]) -> None:
    generator = EventIdGenerator()
    first = generator.new()
    frozen_ms[0] -= 5_000
    assert generator.new() > first


def test_an_exhausted_millisecond_borrows_the_next(frozen_ms: list[int]) -> None:
    generator = EventIdGenerator()
    first = generator.new()
    generator._counter = event_ids._COUNTER_MAX
    borrowed = generator.new()
    assert borrowed > first
    assert int(uuid.UUID(borrowed).hex[:12], 16) == frozen_ms[0] + 1


def test_ids_taken_in_chunks_carry_on_the_same_sequence(frozen_ms: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_ids.random, "getrandbits", lambda bits: (7 << 32) - 5)  # a carry inside the chunk
    generator = EventIdGenerator()
    ids = [generator.new(), *generator.take(10), generator.new(), *generator.take(3)]
    assert ids == sorted(ids) and len(set(ids)) == 15
    for text in ids:
        assert str(uuid.UUID(text)) == text
    counters = [int(uuid.UUID(text).hex[13:16] + uuid.UUID(text).hex[17:], 16) for text in ids]
    assert counters == [(7 << 32) - 5 + n for n in range(15)]


def test_an_id_source_hands_out_fresh_ids_chunk_after_chunk() -> None:
    source = event_ids.id_source(largest_chunk=64)
    ids = [source() for _ in range(500)]
    assert ids == sorted(ids) and len(set(ids)) == 500
