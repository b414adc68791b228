"""The `window` of a `source` variable (PRODUCT.md "Windowed variables"): its spec and its validation.

Kept apart from building.py as trigger_rules.py is; building.py calls `read_window`
from `_variables`. The bucketed state and the aggregates are in engine/windows.py.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

AGGREGATES = ("avg", "min", "max", "sum", "count", "first", "last", "delta", "rate")
WINDOW_KEYS = ("over", "aggregate")
BUCKETS = 60  # per window and key: the state is bounded, and the window edge is over / BUCKETS wide
MIN_OVER = timedelta(seconds=1)
MAX_OVER = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Window:
    """Aggregate the source's readings of one key over the last `over`."""

    over: timedelta
    aggregate: str

    @property
    def width_ms(self) -> int:
        """The width of one bucket in milliseconds (at least 1)."""
        return max(1, int(self.over.total_seconds() * 1000) // BUCKETS)


class Builder(Protocol):
    """What building.py's _Builder offers: a failure at a path, and duration parsing."""

    def fail(self, path: tuple[Any, ...], reason: str) -> None: ...

    def duration(self, path: tuple[Any, ...], text: Any) -> timedelta | None: ...


def read_window(builder: Builder, raw: Any, path: tuple[Any, ...], has_source: bool) -> Window | None:
    """The variable's Window, validated; failures are recorded on `builder` (None then)."""
    if not has_source:
        builder.fail(path, "'window' needs a 'source' variable: it aggregates the source's readings")
        return None
    if not isinstance(raw, Mapping):
        builder.fail(path, "'window' must be a mapping like {over: 5m, aggregate: avg}")
        return None
    for key in raw:
        if key not in WINDOW_KEYS:
            builder.fail(path + (key,), f"unknown window key '{key}'{_hint(str(key), WINDOW_KEYS)}")
    over = _over(builder, path + ("over",), raw.get("over"))
    aggregate = raw.get("aggregate")
    if aggregate not in AGGREGATES:
        builder.fail(path + ("aggregate",), f"unknown window aggregate {aggregate!r}{_hint(str(aggregate), AGGREGATES)}")
        return None
    return None if over is None else Window(over, aggregate)


def _over(builder: Builder, path: tuple[Any, ...], raw: Any) -> timedelta | None:
    if raw is None:
        builder.fail(path, "'window' needs 'over', a duration such as 5m")
        return None
    over = builder.duration(path, raw)
    if over is not None and not MIN_OVER <= over <= MAX_OVER:
        builder.fail(path, f"window 'over' must be from 1s to 7d, got {raw!r}")
        return None
    return over


def _hint(word: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (expected one of {list(known)})"
