"""Turns a batch of steps into the rows to write, checked and netted out in Python.

Both stores apply the same plan (PostgreSQL with a few array statements, memory with
dicts), so they agree on what a batch means: several steps of one instance chain
their versions, a timer scheduled and consumed in one batch never reaches a table,
and everything JSON is serialised once, with the same errors in both stores. Rows are
named tuples: a batch makes thousands, and COPY takes a tuple as it is.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from process_engine.domain.errors import ConcurrencyConflict, StoreError
from process_engine.domain.instance import STATUSES
from process_engine.engine.commands import (
    CancelTimer,
    InstanceCompleted,
    InstanceFailed,
    RecordHistory,
    RunAction,
    ScheduleTimer,
)
from process_engine.ports import DeadLetter, HoldWrite, InstanceQuery, LedgerEntry, Step
from process_engine.runtime.event_ids import id_source
from process_engine.runtime.hold_rows import HoldPlan, plan_holds
from process_engine.runtime.redaction import ACTION_REQUESTED, redacted
from process_engine.runtime.trace_context import trace_id as stored_trace_id

# What orjson refuses (integers above 64 bits, lone surrogates) goes through the
# standard library instead; built once, as json.dumps with options builds an encoder per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INSERTED = "inserted"
_DELETED = "deleted"
_dumps = orjson.dumps
_row = tuple.__new__  # a NamedTuple's own __new__ is a Python function


class InstanceRow(NamedTuple):
    """One `process_instances` row to insert (expected_version None) or update."""

    id: str
    definition_id: str
    definition_version: int
    status: str
    variables: str
    state: str
    current_activity: str | None
    correlation_key: str | None
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None
    expected_version: int | None
    new_version: int


class TimerRow(NamedTuple):
    """One `process_timers` row."""

    id: str
    instance_id: str
    token_id: str
    activity_id: str
    kind: str
    due_at: datetime
    trace_context: str | None = None


class ActionRow(NamedTuple):
    """One `process_outbox` row."""

    idempotency_key: str
    instance_id: str
    token_id: str
    activity_id: str
    action: str
    config: str
    attempt: int
    trace_context: str | None = None


class HistoryRow(NamedTuple):
    """One `process_history` row, in the table's column order: COPY takes it as it is.

    `timestamp` is ISO 8601 text: a batch's rows nearly all share the time of their
    unit of work, and formatting a datetime per row cost COPY more than all the
    other columns together.
    """

    id: str
    instance_id: str
    activity_id: str | None
    event_type: str
    timestamp: str
    data: str | None
    message: str | None
    correlation_id: str | None
    causation_id: str | None
    trace_id: str | None


class LedgerRow(NamedTuple):
    """One `trigger_ledger` row."""

    topic: str
    partition: int
    offset: int
    definition_id: str
    instance_id: str | None

    @property
    def key(self) -> tuple[str, int, int, str]:
        """The ledger's primary key."""
        return (self.topic, self.partition, self.offset, self.definition_id)


@dataclass(slots=True)
class CommitPlan:
    """Everything one commit writes, grouped per table in the order it is applied."""

    inserts: list[InstanceRow] = field(default_factory=list)
    updates: list[InstanceRow] = field(default_factory=list)
    consumed_timers: list[str] = field(default_factory=list)
    cancelled_timers: list[str] = field(default_factory=list)
    consumed_actions: list[str] = field(default_factory=list)
    timers: list[TimerRow] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)
    ledger: list[LedgerRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    holds: HoldPlan = field(default_factory=lambda: HoldPlan([], [], []))


def plan_commit(
    steps: Sequence[Step],
    ledger: Sequence[LedgerEntry] = (),
    dead_letters: Sequence[DeadLetter] = (),
    new_id: Callable[[], str] | None = None,
    holds: Sequence[HoldWrite] = (),
) -> CommitPlan:
    """Check and group a batch. Raises ConcurrencyConflict or StoreError."""
    planner = _Planner(new_id or id_source())
    for step in steps:
        planner.add_step(step)
    for entry in ledger:
        planner.add_ledger(entry)
    planner.plan.dead_letters.extend(dead_letters)
    if holds:
        planner.plan.holds = plan_holds(holds, to_json_text, require_aware)
    return planner.finish()


def canonical_uuid(value: Any, what: str) -> str:
    """The canonical text of a UUID; StoreError naming `what` if it is not one."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value  # already canonical (nearly always): parsing it again costs 3 µs
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        raise StoreError(f"{what} {value!r} is not a UUID") from None


def to_json_text(value: Any, what: str | Callable[[], str]) -> str:
    """Compact JSON text; StoreError naming `what` if PostgreSQL's jsonb would refuse it.

    `what` may be a function, called only when there is an error to report: the
    hot paths would otherwise format a description for every value they store.
    NaN and infinities become null, as in JavaScript's JSON.stringify: JSON has no
    spelling for them. (Messages that spell them are not JSON and never get here.)
    """
    try:
        text = orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        try:
            text = _JSON.encode(value)
        except Exception as error:  # nested too deep, a cycle, a huge int: all are values jsonb won't take
            raise StoreError(f"{_described(what)} is not JSON-serialisable: {error}") from None
    if holds_nul(text):  # jsonb cannot hold NUL characters
        raise StoreError(f"{_described(what)} contains a NUL character, which jsonb cannot store")
    return text


def holds_nul(text: str) -> bool:
    """Whether JSON text spells a NUL character: `\\u0000` after an even number of backslashes (a text
    with a backslash before `u0000` spells the backslash, which jsonb takes)."""
    return "\\u0000" in text and _NUL.search(text) is not None


def _described(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


# InstanceQuery.extra keys both stores understand.
_EXTRA_FILTERS = ("correlation_key", "trace_id")


def query_filters(query: InstanceQuery) -> dict[str, Any]:
    """The filters of an InstanceQuery as plain values; StoreError for unknown ones."""
    unknown = sorted(set(query.extra) - set(_EXTRA_FILTERS))
    if unknown:
        raise StoreError(
            f"unknown instance filter(s) {', '.join(unknown)}; "
            f"supported extras: {', '.join(_EXTRA_FILTERS)}"
        )
    if query.limit < 0 or query.offset < 0:
        raise StoreError(f"instance query limit and offset must not be negative, got {query.limit} and {query.offset}")
    return {
        "status": query.status,
        "definition_id": query.definition_id,
        "correlation_key": query.extra.get("correlation_key"),
        "trace_id": query.extra.get("trace_id"),  # the instances of one trace (the way back from Jaeger)
        "limit": query.limit,
        "offset": query.offset,
    }


def require_aware(value: datetime | None, what: str) -> datetime | None:
    """Refuse naive datetimes: TIMESTAMPTZ would silently apply the session time zone."""
    if value is not None and value.utcoffset() is None:
        raise StoreError(f"{what} {value!r} has no time zone; use timezone-aware UTC datetimes")
    return value


class _Planner:
    """Accumulates one batch; tracks what earlier steps in it did to timers and actions."""

    def __init__(self, new_id: Callable[[], str]) -> None:
        self.plan = CommitPlan()
        self._new_id = new_id
        self._instances: dict[str, InstanceRow] = {}
        self._timers: dict[str, TimerRow] = {}
        self._actions: dict[str, ActionRow] = {}
        self._timer_fate: dict[str, str] = {}
        self._action_fate: dict[str, str] = {}
        self._ledger_keys: set[tuple[str, int, int, str]] = set()
        self._times: dict[datetime, str] = {}  # history timestamps, each formatted once

    def add_step(self, step: Step) -> None:
        """Plan one step: its instance row, consumed rows, then its commands."""
        instance_id = self._add_instance(step)
        if step.consumed_timer is not None:
            self._consume_timer(step.consumed_timer)
        if step.consumed_action is not None:
            self._consume_action(step.consumed_action)
        # History rows are most of a batch's rows: made here, without a call per row (to_json_text's
        # fast path inline, the row a plain tuple.__new__: a NamedTuple's own __new__ is Python).
        history, new_id, times = self.plan.history, self._new_id, self._times
        correlation_id, causation_id = step.correlation_id, step.causation_id
        trace = step.instance.trace
        trace_id = stored_trace_id(trace)
        for command in step.commands:
            if type(command) is not RecordHistory:
                self._add_command(instance_id, step, command)
                continue
            activity_id, event_type, at, data, message = command
            if data is not None:
                if event_type == ACTION_REQUESTED:
                    data = redacted(data)
                try:
                    data = _dumps(data, option=_ORJSON_OPTIONS).decode()
                except TypeError:
                    data = to_json_text(data, f"history data of {event_type}")
                if "\\u0000" in data and holds_nul(data):  # the substring first: a call per row costs more
                    raise StoreError(f"history data of {event_type} contains a NUL character, which jsonb cannot store")
            text = times.get(at)
            if text is None:
                text = times[at] = require_aware(at, "history timestamp").isoformat(timespec="microseconds")
            history.append(_row(HistoryRow, (new_id(), instance_id, activity_id, event_type, text, data,
                                             message, correlation_id, causation_id, trace_id)))

    def add_ledger(self, entry: LedgerEntry) -> None:
        """Plan one trigger-ledger row; the same message twice in a batch is a conflict."""
        coordinate = entry.coordinate
        key = (coordinate.topic, coordinate.partition, coordinate.offset, entry.definition_id)
        if key in self._ledger_keys:
            raise ConcurrencyConflict(f"trigger ledger entry {key} appears twice in one batch")
        self._ledger_keys.add(key)
        instance_id = None
        if entry.instance_id is not None:
            instance_id = entry.instance_id
            if instance_id not in self._instances:  # an instance row's id is checked already
                instance_id = canonical_uuid(instance_id, "ledger instance id")
        self.plan.ledger.append(LedgerRow(*key, instance_id))

    def finish(self) -> CommitPlan:
        """The completed plan; instance rows sorted by id so concurrent batches lock alike."""
        for row in sorted(self._instances.values(), key=lambda row: row.id):
            target = self.plan.inserts if row.expected_version is None else self.plan.updates
            target.append(row)
        self.plan.timers.extend(self._timers.values())
        self.plan.actions.extend(self._actions.values())
        return self.plan

    def _add_instance(self, step: Step) -> str:
        """Fold this step's instance into the batch, chaining versions of repeated ids."""
        state = step.instance
        instance_id = canonical_uuid(state.id, "instance id")
        if state.status not in STATUSES:
            raise StoreError(f"instance {instance_id} has unknown status {state.status!r}")
        for what, text in (("correlation key", state.correlation_key), ("error", state.error)):
            if text is not None and "\x00" in text:  # PostgreSQL text cannot hold NUL characters
                raise StoreError(f"instance {instance_id} {what} contains a NUL character, which text cannot store")
        earlier = self._instances.get(instance_id)
        expected = step.expected_version
        if earlier is not None and expected != earlier.new_version:
            raise ConcurrencyConflict(
                f"instance {instance_id}: step expects version {expected} but the batch "
                f"already brings it to version {earlier.new_version}"
            )
        first_expected = earlier.expected_version if earlier is not None else expected
        self._instances[instance_id] = InstanceRow(
            id=instance_id,
            definition_id=state.definition_id,
            definition_version=state.definition_version,
            status=state.status,
            variables=to_json_text(state.variables, lambda: f"instance {instance_id} variables"),
            state=to_json_text(state.to_json(), lambda: f"instance {instance_id} state"),
            current_activity=state.current_activity,
            correlation_key=state.correlation_key,
            error=state.error,
            started_at=require_aware(state.started_at, "started_at"),
            completed_at=require_aware(state.completed_at, "completed_at"),
            expected_version=first_expected,
            new_version=(expected or 0) + 1,
        )
        return instance_id

    def _add_command(self, instance_id: str, step: Step, command: object) -> None:
        """Plan the rows one command asks for."""
        match command:
            case ScheduleTimer():
                self._schedule_timer(instance_id, command, step.instance.trace)
            case CancelTimer():
                self._cancel_timer(command.timer_id)
            case RunAction():
                self._run_action(instance_id, command, step.instance.trace)
            case InstanceCompleted() | InstanceFailed():
                pass  # status and completed_at travel in the instance row
            case _:
                raise StoreError(f"the store cannot perform command {command!r}")

    def _schedule_timer(self, instance_id: str, command: ScheduleTimer, trace: str | None) -> None:
        """A new timer row; the same id twice in one batch is a conflict."""
        if self._timer_fate.get(command.timer_id) == _INSERTED:
            raise ConcurrencyConflict(f"timer {command.timer_id} scheduled twice in one batch")
        self._timer_fate[command.timer_id] = _INSERTED
        self._timers[command.timer_id] = TimerRow(
            id=command.timer_id,
            instance_id=instance_id,
            token_id=command.token_id,
            activity_id=command.activity_id,
            kind=command.kind,
            due_at=require_aware(command.due_at, "timer due_at"),
            trace_context=trace,
        )

    def _cancel_timer(self, timer_id: str) -> None:
        """Drop a timer if it exists; one scheduled earlier in the batch never lands."""
        fate = self._timer_fate.get(timer_id)
        if fate == _INSERTED:
            del self._timers[timer_id]
        elif fate is None:
            self.plan.cancelled_timers.append(timer_id)
        self._timer_fate[timer_id] = _DELETED

    def _consume_timer(self, timer_id: str) -> None:
        """A timer that must still exist; it is used up by this step."""
        fate = self._timer_fate.get(timer_id)
        if fate == _DELETED:
            raise ConcurrencyConflict(f"timer {timer_id} is already used up in this batch")
        if fate == _INSERTED:
            del self._timers[timer_id]
        else:
            self.plan.consumed_timers.append(timer_id)
        self._timer_fate[timer_id] = _DELETED

    def _run_action(self, instance_id: str, command: RunAction, trace: str | None) -> None:
        """An outbox row; an idempotency key already queued is left as it is."""
        key = command.idempotency_key
        if self._action_fate.get(key) == _INSERTED:
            return
        self._action_fate[key] = _INSERTED
        self._actions[key] = ActionRow(
            idempotency_key=key,
            instance_id=instance_id,
            token_id=command.token_id,
            activity_id=command.activity_id,
            action=command.action,
            config=to_json_text(command.config, lambda: f"config of action {key}"),
            attempt=command.attempt,
            trace_context=trace,
        )

    def _consume_action(self, key: str) -> None:
        """An outbox row that must still exist; it is used up by this step."""
        fate = self._action_fate.get(key)
        if fate == _DELETED:
            raise ConcurrencyConflict(f"action {key} is already used up in this batch")
        if fate == _INSERTED:
            del self._actions[key]
        else:
            self.plan.consumed_actions.append(key)
        self._action_fate[key] = _DELETED
