"""Windowed variables as pure functions: bucketed state per key, aggregates, and the windowed match.

Each window keeps at most BUCKETS buckets of width over / BUCKETS, each with count,
sum, min, max and the first and last reading (time, value): never every reading.
A bucket is in the window while it starts after now - over, so the aggregate is the
exact one over the readings of the last `over` minus at most one bucket width at the
old edge (README "Windowed variables"). Time is the message's time in epoch ms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from process_engine.domain.definition import ProcessDefinition, Variable
from process_engine.domain.windows import BUCKETS, Window
from process_engine.engine.triggers import Match, extract

# Bucket fields: index, count, sum, min, max, first ms, first value, last ms, last value.
INDEX, COUNT, SUM, MIN, MAX, FIRST_MS, FIRST, LAST_MS, LAST = range(9)


def add(buckets: list[list[Any]], window: Window, at_ms: int, value: float) -> list[list[Any]]:
    """The buckets with one reading added (a reading older than the window is left out)."""
    width = window.width_ms
    index = at_ms // width
    newest = max(index, buckets[-1][INDEX] if buckets else index)
    kept = [list(b) for b in buckets if b[INDEX] > newest - BUCKETS]
    if index <= newest - BUCKETS:
        return kept
    for bucket in kept:
        if bucket[INDEX] == index:
            bucket[COUNT] += 1
            bucket[SUM] += value
            bucket[MIN], bucket[MAX] = min(bucket[MIN], value), max(bucket[MAX], value)
            if at_ms < bucket[FIRST_MS]:
                bucket[FIRST_MS], bucket[FIRST] = at_ms, value
            if at_ms >= bucket[LAST_MS]:
                bucket[LAST_MS], bucket[LAST] = at_ms, value
            return kept
    kept.append([index, 1, value, value, value, at_ms, value, at_ms, value])
    kept.sort(key=lambda b: b[INDEX])
    return kept


def live(buckets: list[list[Any]], window: Window, now_ms: int) -> list[list[Any]]:
    """The buckets still inside the window at `now_ms`."""
    oldest = now_ms // window.width_ms - BUCKETS
    return [b for b in buckets if b[INDEX] > oldest]


def aggregate(buckets: list[list[Any]], window: Window) -> float | int | None:
    """The window's aggregate over `buckets` (already `live`); None when it holds no reading."""
    if not buckets:
        return None
    name = window.aggregate
    count = sum(b[COUNT] for b in buckets)
    total = sum(b[SUM] for b in buckets)
    first = min(buckets, key=lambda b: b[FIRST_MS])
    last = max(buckets, key=lambda b: b[LAST_MS])
    if name == "count":
        return count
    if name == "sum":
        return total
    if name == "avg":
        return total / count
    if name == "min":
        return min(b[MIN] for b in buckets)
    if name == "max":
        return max(b[MAX] for b in buckets)
    if name == "first":
        return first[FIRST]
    if name == "last":
        return last[LAST]
    delta = last[LAST] - first[FIRST]
    if name == "delta":
        return delta
    seconds = (last[LAST_MS] - first[FIRST_MS]) / 1000
    return delta / seconds if seconds > 0 else 0.0  # rate: per second


def observe(
    definition: ProcessDefinition, windows: Mapping[str, Any] | None, values: Mapping[str, Any], at_ms: int
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The key's window state with this message's readings, and each windowed variable's aggregate.

    A reading that is not a number is not counted. A state kept under another `over`
    (the definition changed) starts again.
    """
    kept: dict[str, Any] = {}
    aggregates: dict[str, Any] = {}
    for variable in definition.variables:
        window = variable.window
        if window is None:
            continue
        buckets = _buckets(windows, variable, window)
        value = values.get(variable.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            buckets = add(buckets, window, at_ms, value)
        buckets = live(buckets, window, at_ms)
        aggregates[variable.name] = aggregate(buckets, window)
        if buckets:
            kept[variable.name] = {"w": window.width_ms, "b": buckets}
    return kept or None, aggregates


def _buckets(windows: Mapping[str, Any] | None, variable: Variable, window: Window) -> list[list[Any]]:
    stored = (windows or {}).get(variable.name)
    if not stored or stored.get("w") != window.width_ms:
        return []
    return stored["b"]


def windowed_match(
    definition: ProcessDefinition, message: Mapping[str, Any], key: str | None,
    windows: Mapping[str, Any] | None, at_ms: int,
) -> tuple[Match, dict[str, Any] | None]:
    """As triggers.match_keyed (`key`: the message's correlation key), with each windowed variable's aggregate (this message included) for its value.

    Returns the match and the key's new window state. An empty window leaves the
    variable missing.

    Raises:
        ExpressionError: the condition failed at run time (the caller dead-letters the message).
    """
    variables, missing = extract(definition, message)
    kept, aggregates = observe(definition, windows, variables, at_ms)
    gone = [name for name, value in aggregates.items() if value is None]
    for name, value in aggregates.items():
        if value is None:
            variables.pop(name, None)
        else:
            variables[name] = value
    missing = tuple(dict.fromkeys([m for m in missing if aggregates.get(m) is None] + gone))
    matched = True
    condition = definition.trigger.condition
    if condition is not None:
        scope = {v.name: v.value for v in definition.variables if v.source is None}
        scope.update(variables)
        matched = bool(condition.evaluate(scope, message))
    return Match(matched, variables, missing, key), kept
