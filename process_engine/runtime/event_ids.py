"""Time-ordered event ids (UUIDv7 layout): history rows sort by time, then insertion."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

_COUNTER_BITS = 74  # rand_a (12) + rand_b (62): everything after the timestamp
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_LOW_MASK = 0xFFFFFFFF


class EventIdGenerator:
    """Makes UUIDv7-style ids that increase strictly within this process.

    Within one millisecond the random tail is a counter that starts at a random
    point in its lower half, so ids made later in the same process always sort
    later (RFC 9562, method 3 monotonicity), even when the clock steps back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0
        self._head_of: tuple[int, int] = (-1, -1)  # (millisecond, counter >> 32) of `_head`
        self._head = ""

    def new(self) -> str:
        """The next id, as a canonical UUID string."""
        with self._lock:
            unix_ms, counter = self._reserve(1)
            # Only the last 8 hex digits change from one id to the next: formatting the
            # whole 128 bits each time cost more than the rest of a history row.
            if (unix_ms, counter >> 32) != self._head_of:
                self._head_of, self._head = (unix_ms, counter >> 32), _format(unix_ms, counter)[:-8]
            return f"{self._head}{counter & _LOW_MASK:08x}"

    def take(self, count: int) -> list[str]:
        """`count` consecutive ids at once: one lock and one clock read for all of them."""
        with self._lock:
            unix_ms, first = self._reserve(count)
        low = first & _LOW_MASK
        if low + count <= _LOW_MASK + 1:  # no carry out of the last 8 digits
            head = _format(unix_ms, first)[:-8]
            return [f"{head}{n:08x}" for n in range(low, low + count)]
        return [_format(unix_ms, n) for n in range(first, first + count)]

    def _reserve(self, count: int) -> tuple[int, int]:
        """The millisecond and first counter of `count` ids no other call gets (hold the lock)."""
        now_ms = time.time_ns() // 1_000_000
        if now_ms > self._last_ms:
            self._last_ms = now_ms
            # Not os.urandom: a system call gives the GIL away, and at thousands of ids a
            # second the thread then waits for it again. The module's generator is seeded
            # from the OS and re-seeded in forked children.
            first = random.getrandbits(_COUNTER_BITS - 1)
        else:
            first = self._counter + 1
        if first + count - 1 > _COUNTER_MAX:  # exhausted: borrow the next millisecond
            self._last_ms += 1
            first = 0
        self._counter = first + count - 1
        return self._last_ms, first


def id_source(largest_chunk: int = 256) -> Callable[[], str]:
    """A function giving fresh ids, taken from the process-wide generator in chunks.

    For one thread (one commit plan): cheaper per id than `new_event_id` when many are
    needed. Chunks start small and grow, so a plan that needs a few ids makes a few.
    """
    ready: list[str] = []
    chunk = 8

    def next_id() -> str:
        nonlocal chunk
        if not ready:
            ready.extend(reversed(_DEFAULT.take(chunk)))
            chunk = min(chunk * 4, largest_chunk)
        return ready.pop()

    return next_id


def _format(unix_ms: int, counter: int) -> str:
    """Lay out timestamp, version 7, variant and counter as a UUID."""
    rand_a = counter >> 62
    rand_b = counter & ((1 << 62) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


_DEFAULT = EventIdGenerator()


def new_event_id() -> str:
    """A fresh time-ordered event id from the process-wide generator."""
    return _DEFAULT.new()
