"""One instance's trace, read from its history: the path it took and each step, as the console shows them.

Pure functions over the definition, the instance and its history rows, so what a page
shows is unit-tested without a browser.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from process_engine.adapters.http.flowchart import Highlight, short_duration
from process_engine.domain.definition import Activity, ProcessDefinition
from process_engine.domain.instance import InstanceState
from process_engine.ports import HistoryRecord

REDACTED = "***"
# Config keys whose values are secrets wherever they appear; header values are all hidden.
SECRET_KEY = re.compile(r"pass(word)?|secret|token|authori[sz]ation|api[-_]?key|cookie|credential", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Change:
    """A variable that changed: its name, the value before (None at the start) and after."""

    name: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One history row as a step of the timeline."""

    at: datetime
    offset: str
    activity_id: str | None
    event_type: str
    title: str
    tone: str = "info"  # info | ok | wait | fail: the step's colour
    message: str | None = None
    read: dict[str, Any] | None = None
    changes: tuple[Change, ...] = ()
    config: Any = None
    details: dict[str, Any] = field(default_factory=dict)


def trace_path(definition: ProcessDefinition | None, instance: InstanceState, history: Sequence[HistoryRecord]) -> Highlight:
    """The activities an instance visited, where it stands now, and the arrows it took."""
    activities = definition.activities if definition is not None else {}
    visited: set[str] = set()
    taken: set[tuple[str, str]] = set()
    failed: set[str] = set()
    for record in history:
        if record.activity_id is None:
            continue
        visited.add(record.activity_id)
        activity = activities.get(record.activity_id)
        if activity is not None:
            taken.update((activity.id, target) for target in _targets_taken(activity, record))
        if record.event_type == "failed":
            failed.add(record.activity_id)
    current = {token.activity_id for token in instance.tokens} if instance.active else set()
    return Highlight(frozenset(visited), frozenset(current), frozenset(failed if instance.status == "failed" else ()), frozenset(taken))


def _targets_taken(activity: Activity, record: HistoryRecord) -> tuple[str, ...]:
    """The arrows this history row says the instance followed out of `activity`."""
    data = record.data or {}
    if record.event_type == "error_path" and activity.on_error:
        return (activity.on_error,)
    if record.event_type == "timeout":
        target = activity.timeout_path or activity.next
        return (target,) if target else ()
    if record.event_type != "completed" or activity.type == "end":
        return ()
    if activity.type == "decision":
        return (data["path"],) if isinstance(data.get("path"), str) else ()
    if activity.type == "parallel":
        return activity.branches
    return (activity.next,) if activity.next else ()


def trace_steps(definition: ProcessDefinition | None, history: Sequence[HistoryRecord]) -> list[TraceStep]:
    """Every history row as a step, in time order, with what it read, changed and ran."""
    started = history[0].timestamp if history else None
    activities = definition.activities if definition is not None else {}
    steps = []
    for record in history:
        activity = activities.get(record.activity_id) if record.activity_id else None
        describe = DESCRIBERS.get(record.event_type, _other)
        fields = describe(record, record.data or {}, activity)
        offset = _offset(record.timestamp - started) if started is not None else ""
        steps.append(TraceStep(record.timestamp, offset, record.activity_id, record.event_type, **fields))
    return steps


def _offset(elapsed: Any) -> str:
    seconds = elapsed.total_seconds()
    return "+0s" if seconds < 1 else f"+{short_duration(elapsed)}"


Fields = dict[str, Any]
Describer = Callable[[HistoryRecord, Mapping[str, Any], Activity | None], Fields]


def _started(record: HistoryRecord, data: Mapping[str, Any], activity: Activity | None) -> Fields:
    variables = data.get("variables") or {}
    changes = tuple(Change(name, None, value) for name, value in sorted(variables.items()))
    return {"title": "Instance started", "tone": "ok", "message": record.message, "changes": changes}


def _variable_changed(record: HistoryRecord, data: Mapping[str, Any], activity: Activity | None) -> Fields:
    change = Change(str(data.get("name")), data.get("old"), data.get("new"))
    return {"title": f"Variable {change.name} changed", "changes": (change,)}


def _completed(record: HistoryRecord, data: Mapping[str, Any], activity: Activity | None) -> Fields:
    kind = activity.type if activity is not None else None
    rest = {k: v for k, v in data.items() if k not in ("read", "assigned", "result", "path", "condition", "timer", "attempt")}
    fields: Fields = {"title": f"{record.activity_id} completed", "tone": "ok", "read": data.get("read"), "details": rest}
    if kind == "decision":
        fields["title"] = f"Decision {record.activity_id}: {data.get('result')} \u2192 {data.get('path')}"
    elif kind == "wait":
        fields["title"] = f"Wait {record.activity_id}: the condition holds"
    elif kind == "timer":
        fields["title"] = f"Timer {record.activity_id} fired"
    elif kind == "service" or "attempt" in data:
        fields["title"] = f"Action of {record.activity_id} succeeded (attempt {data.get('attempt')})"
        fields["details"] = {**rest, **({"result": data["result"]} if "result" in data else {})}
    elif kind == "parallel":
        fields["title"] = f"{record.activity_id} forked into {', '.join(map(str, data.get('branches') or ()))}"
    if "assigned" in data:
        fields["changes"] = tuple(Change(name, None, value) for name, value in sorted((data.get("assigned") or {}).items()))
        fields["title"] = f"{record.activity_id} set {', '.join(sorted(data.get('assigned') or {}))}"
    return fields


def _action_requested(record: HistoryRecord, data: Mapping[str, Any], activity: Activity | None) -> Fields:
    title = f"Action {data.get('action')} requested (attempt {data.get('attempt')})"
    return {"title": title, "config": redacted(data.get("config")), "details": {"idempotency key": data.get("key")}}


def _action_failed(record: HistoryRecord, data: Mapping[str, Any], activity: Activity | None) -> Fields:
    retriable = "retriable" if data.get("retriable") else "not retriable"
    return {"title": f"Action failed (attempt {data.get('attempt')}, {retriable})", "tone": "fail", "message": record.message}


def _scheduled(what: str, key: str) -> Describer:
    def describe(record: HistoryRecord, data: Mapping[str, Any], activity: Activity | None) -> Fields:
        due = data.get(key)
        named = what.format_map(_Blanks({**data, "activity": record.activity_id}))
        title = f"{named} due at {_readable_time(due)}" if due else named
        details = {k: v for k, v in data.items() if k not in (key, "read")}
        return {"title": title, "tone": "wait", "read": data.get("read"), "details": details}

    return describe


def _plain(title: str, tone: str = "info") -> Describer:
    def describe(record: HistoryRecord, data: Mapping[str, Any], activity: Activity | None) -> Fields:
        values = _Blanks({**data, "activity": record.activity_id})
        return {"title": title.format_map(values), "tone": tone, "message": record.message}

    return describe


class _Blanks(dict[str, Any]):
    """Format values where a missing one (an older row) shows as `?` rather than raising."""

    def __missing__(self, key: str) -> str:
        return "?"


def _other(record: HistoryRecord, data: Mapping[str, Any], activity: Activity | None) -> Fields:
    return {"title": record.event_type.replace("_", " ").capitalize(), "message": record.message, "details": dict(data)}


DESCRIBERS: dict[str, Describer] = {
    "started": _started,
    "variable_changed": _variable_changed,
    "variable_missing": _plain("Variable {name} matched nothing", "fail"),
    "completed": _completed,
    "action_requested": _action_requested,
    "action_failed": _action_failed,
    "retry_scheduled": _scheduled("Attempt {attempt} of {activity}", "due_at"),
    "timer_scheduled": _scheduled("Timer {activity}", "due_at"),
    "waiting": _scheduled("Wait {activity}: waiting for the condition; timeout", "timeout_at"),
    "error_path": _plain("Error path taken", "fail"),
    "timeout": _plain("Wait {activity} timed out", "fail"),
    "join_waiting": _plain("Join {activity}: {arrived} of {expected} branches arrived", "wait"),
    "failed": _plain("Failed", "fail"),
    "process_completed": _plain("Instance completed", "ok"),
    "cancelled": _plain("Cancelled", "fail"),
    "suspended": _plain("Suspended", "wait"),
    "resumed": _plain("Resumed"),
    "retried": _plain("Retried"),
}


def _readable_time(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return str(value)


def redacted(config: Any, hide: bool = False) -> Any:
    """An action's config with secret values (passwords, tokens, header values) shown as ***."""
    if isinstance(config, Mapping):
        return {key: redacted(value, hide or bool(SECRET_KEY.search(str(key))) or str(key).lower() == "headers") for key, value in config.items()}
    if isinstance(config, list):
        return [redacted(item, hide) for item in config]
    return REDACTED if hide and config is not None else config


__all__ = ["Change", "TraceStep", "redacted", "trace_path", "trace_steps"]
