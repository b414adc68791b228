"""Per-type readers: the fields each built-in activity type takes, checked and compiled."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from process_engine.domain.compensation_fields import check_action, read_compensate
from process_engine.domain.definition import RetryPolicy
from process_engine.domain.field_builder import FieldBuilder, Path
from process_engine.domain.name_checks import suggestion

Reader = Callable[[FieldBuilder, Mapping[str, Any], Path, str], dict[str, Any]]

RETRY_KEYS = frozenset({"max_attempts", "backoff", "multiplier", "max_backoff", "jitter"})
COMMON_KEYS = frozenset({"id", "type", "next", "name", "description"})
ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "start": frozenset(),
    "end": frozenset(),
    "join": frozenset(),
    "decision": frozenset({"condition", "true_path", "false_path"}),
    "service": frozenset({"action", "config", "retry", "on_error", "compensate"}),
    "compensate": frozenset(),
    "timer": frozenset({"duration", "until"}),
    "wait": frozenset({"condition", "timeout", "timeout_path"}),
    "set": frozenset({"set"}),
    "parallel": frozenset({"branches"}),
}


def _unknown_keys(builder: FieldBuilder, item: Mapping[str, Any], path: Path, kind: str) -> bool:
    """Report keys the type does not take; True when one looks like a misspelt allowed key."""
    allowed = COMMON_KEYS | ALLOWED_KEYS[kind]
    misspelt = False
    for key in item:
        if key not in allowed:
            hint = suggestion(str(key), allowed)
            misspelt = misspelt or bool(hint)
            builder.fail(path + (key,), f"unknown key '{key}' for a {kind} activity{hint} (allowed: {sorted(allowed)})")
    return misspelt


def _plain(kind: str) -> Reader:
    def read(builder: FieldBuilder, item: Mapping[str, Any], path: Path, activity_id: str) -> dict[str, Any]:
        _unknown_keys(builder, item, path, kind)
        return {}

    return read


def _decision(builder: FieldBuilder, item: Mapping[str, Any], path: Path, activity_id: str) -> dict[str, Any]:
    misspelt = _unknown_keys(builder, item, path, "decision")
    condition = item.get("condition")
    if condition is None and not misspelt:  # else the misspelling was the error
        builder.fail(path, f"decision '{activity_id}' needs a 'condition'")
    return {
        "condition": builder.expression(path + ("condition",), condition) if condition is not None else None,
        "true_path": builder.text(item, "true_path", path),
        "false_path": builder.text(item, "false_path", path),
    }


def _service(builder: FieldBuilder, item: Mapping[str, Any], path: Path, activity_id: str) -> dict[str, Any]:
    _unknown_keys(builder, item, path, "service")
    action = builder.text(item, "action", path)
    config = item.get("config") or {}
    if not isinstance(config, Mapping):
        builder.fail(path + ("config",), "'config' must be a mapping")
        config = {}
    extensions = builder.extensions
    check_action(builder, action, config, path)
    return {
        "action": action,
        "config": builder.template(path + ("config",), dict(config), extensions.encoders.get(action or "")),
        "retry": _retry(builder, item.get("retry"), path + ("retry",)),
        "on_error": builder.text(item, "on_error", path, required=False),
        "compensate": read_compensate(builder, item.get("compensate"), path + ("compensate",)),
    }


def _retry(builder: FieldBuilder, raw: Any, path: Path) -> RetryPolicy:
    if raw is None:
        return RetryPolicy()
    if not isinstance(raw, Mapping):
        builder.fail(path, "'retry' must be a mapping with max_attempts and backoff")
        return RetryPolicy()
    unknown = set(raw) - RETRY_KEYS
    for key in sorted(unknown):
        builder.fail(path + (key,), f"unknown retry setting '{key}'{suggestion(str(key), RETRY_KEYS)}")
    attempts = raw.get("max_attempts", 3)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        builder.fail(path + ("max_attempts",), "'max_attempts' must be an integer of at least 1")
        attempts = 1
    multiplier = raw.get("multiplier", 2.0)
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or multiplier < 1:
        builder.fail(path + ("multiplier",), "'multiplier' must be a number of at least 1")
        multiplier = 2.0
    jitter = raw.get("jitter", 0.1)
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
        builder.fail(path + ("jitter",), "'jitter' must be a fraction between 0 and 1")
        jitter = 0.1
    defaults = RetryPolicy()
    backoff = builder.duration(path + ("backoff",), raw["backoff"]) if "backoff" in raw else defaults.backoff
    ceiling = builder.duration(path + ("max_backoff",), raw["max_backoff"]) if "max_backoff" in raw else defaults.max_backoff
    return RetryPolicy(
        max_attempts=attempts,
        backoff=backoff or defaults.backoff,
        multiplier=float(multiplier),
        max_backoff=ceiling or defaults.max_backoff,
        jitter=float(jitter),
    )


def _timer(builder: FieldBuilder, item: Mapping[str, Any], path: Path, activity_id: str) -> dict[str, Any]:
    misspelt = _unknown_keys(builder, item, path, "timer")
    has_duration, has_until = "duration" in item, "until" in item
    if has_duration == has_until:
        if not misspelt:  # else the misspelling was the error
            builder.fail(path, f"timer '{activity_id}' needs exactly one of 'duration' (e.g. 5m, PT5M) or 'until'")
        return {}
    if has_duration:
        return {"duration": builder.duration(path + ("duration",), item["duration"])}
    return {"until": builder.expression(path + ("until",), item["until"])}


def _wait(builder: FieldBuilder, item: Mapping[str, Any], path: Path, activity_id: str) -> dict[str, Any]:
    _unknown_keys(builder, item, path, "wait")
    condition = item.get("condition")
    if condition is None:
        builder.fail(path, f"wait '{activity_id}' needs a 'condition'")
    timeout = builder.duration(path + ("timeout",), item["timeout"]) if "timeout" in item else None
    timeout_path = builder.text(item, "timeout_path", path, required=False)
    if timeout_path and timeout is None:
        builder.fail(path + ("timeout_path",), f"wait '{activity_id}' has a 'timeout_path' but no 'timeout'")
    return {
        "condition": builder.expression(path + ("condition",), condition) if condition is not None else None,
        "timeout": timeout,
        "timeout_path": timeout_path,
    }


def _set(builder: FieldBuilder, item: Mapping[str, Any], path: Path, activity_id: str) -> dict[str, Any]:
    _unknown_keys(builder, item, path, "set")
    raw = item.get("set")
    if not isinstance(raw, Mapping) or not raw:
        builder.fail(path, f"set '{activity_id}' needs a 'set' mapping of variable: expression")
        return {}
    assignments = []
    for name, value in raw.items():
        where = path + ("set", name)
        if not isinstance(name, str) or not name.isidentifier():
            builder.fail(where, f"variable name {name!r} must be an identifier")
            continue
        # Strings are expressions; other YAML values (numbers, lists, maps) are literal values.
        compiled = builder.expression(where, value) if isinstance(value, str) else builder.template(where, value)
        if compiled is not None:
            assignments.append((name, compiled))
    return {"assignments": tuple(assignments)}


def _parallel(builder: FieldBuilder, item: Mapping[str, Any], path: Path, activity_id: str) -> dict[str, Any]:
    _unknown_keys(builder, item, path, "parallel")
    branches = item.get("branches")
    if not isinstance(branches, list) or len(branches) < 2 or not all(isinstance(b, str) for b in branches):
        builder.fail(path + ("branches",), f"parallel '{activity_id}' needs 'branches': a list of at least two activity ids")
        return {}
    return {"branches": tuple(branches)}


FIELD_READERS: dict[str, Reader] = {
    "start": _plain("start"),
    "end": _plain("end"),
    "join": _plain("join"),
    "decision": _decision,
    "service": _service,
    "timer": _timer,
    "wait": _wait,
    "set": _set,
    "parallel": _parallel,
    "compensate": _plain("compensate"),
}
