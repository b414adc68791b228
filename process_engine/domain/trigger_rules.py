"""The per-key start rules of a trigger (`for`, `count` with `within`, `cooldown`), and its known keys.

Kept apart from building.py so the trigger's key check and the holds' validation
read as one piece; building.py calls `read_rules` from `_trigger`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol

TRIGGER_KEYS = ("type", "topic", "condition", "correlate", "mode", "cron", "for", "count", "within", "cooldown")
HOLD_KEYS = ("for", "count", "within", "cooldown")
MAX_COUNT = 1_000  # `count` timestamps are kept per key: bounded state


class Builder(Protocol):
    """What building.py's _Builder offers: a failure at a path, and duration parsing."""

    def fail(self, path: tuple[Any, ...], reason: str) -> None: ...

    def duration(self, path: tuple[Any, ...], text: Any) -> timedelta | None: ...


def check_keys(builder: Builder, raw: Mapping[str, Any], path: tuple[Any, ...]) -> None:
    """An unknown key under `trigger` is an error with a suggestion (`forr: 4s` used to pass silently)."""
    for key in raw:
        if key in TRIGGER_KEYS:
            continue
        close = difflib.get_close_matches(str(key), TRIGGER_KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of {list(TRIGGER_KEYS)})"
        builder.fail(path + (key,), f"unknown trigger key '{key}'{hint}")


def read_rules(builder: Builder, raw: Mapping[str, Any], path: tuple[Any, ...], is_topic: bool) -> dict[str, Any]:
    """The Trigger fields of the hold rules, validated; failures are recorded on `builder`."""
    present = [key for key in HOLD_KEYS if raw.get(key) is not None]
    if not present:
        return {}
    if not is_topic:
        builder.fail(path + (present[0],), f"'{present[0]}' needs a kafka/redpanda trigger: it holds messages per key")
        return {}
    fields: dict[str, Any] = {"config_hash": config_hash(raw)}
    for key, name in (("for", "hold_for"), ("within", "within"), ("cooldown", "cooldown")):
        if raw.get(key) is not None:
            fields[name] = _positive(builder, path + (key,), key, builder.duration(path + (key,), raw[key]))
    if raw.get("count") is not None:
        fields["count"] = _count(builder, path + ("count",), raw["count"])
    if ("count" in present) != ("within" in present):
        have, need = ("count", "within") if "count" in present else ("within", "count")
        builder.fail(path + (have,), f"'{have}' needs '{need}' (e.g. count: 3 with within: 10m)")
    if "for" in present and "count" in present:
        builder.fail(path + ("count",), "'for' and 'count' cannot be combined: use one of them (cooldown goes with either)")
    return fields


def config_hash(raw: Mapping[str, Any]) -> str:
    """A stable hash of the trigger's configuration."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _positive(builder: Builder, path: tuple[Any, ...], key: str, value: timedelta | None) -> timedelta | None:
    if value is not None and value <= timedelta(0):
        builder.fail(path, f"'{key}' must be longer than zero")
        return None
    return value


def _count(builder: Builder, path: tuple[Any, ...], value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        builder.fail(path, f"'count' must be a whole number from 1 to {MAX_COUNT}, got {value!r}")
        return None
    return value
