"""A CommitPlan as SQL: one array-parameter statement per table, in a fixed order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from process_engine.adapters.postgres.queries import query
from process_engine.runtime.commit_plan import CommitPlan, HistoryRow, InstanceRow
from process_engine.runtime.hold_rows import HoldRow

Statement = tuple[str, dict[str, Any]]
Copy = tuple[str, list[tuple[Any, ...]]]  # a COPY ... FROM STDIN and its rows
# Up to this many history and ledger rows go in array statements, not COPY: each COPY
# is a round trip of its own, which a small batch waits for more than it gains.
MAX_ROWS_WITHOUT_COPY = 64


@dataclass(frozen=True)
class BatchWrite:
    """A batch ready to send: its statements and COPYs, built before any IO."""

    steps: int
    statements: list[Statement]
    copies: list[Copy]
    leading: list[Copy] = field(default_factory=list)  # before the statements: rows they refer to

_INSTANCE_COLUMNS = (
    "id",
    "definition_id",
    "definition_version",
    "status",
    "variables",
    "state",
    "current_activity",
    "correlation_key",
    "error",
    "started_at",
    "completed_at",
)
_TIMER_COLUMNS = ("id", "instance_id", "token_id", "activity_id", "kind", "due_at", "trace_context")
_HISTORY_COLUMNS = (
    "id",
    "instance_id",
    "activity_id",
    "event_type",
    "timestamp",
    "data",
    "message",
    "correlation_id",
    "causation_id",
    "trace_id",
)
_ACTION_COLUMNS = (
    "idempotency_key",
    "instance_id",
    "token_id",
    "activity_id",
    "action",
    "config",
    "attempt",
    "trace_context",
)
_LEDGER_COLUMNS = ("topic", "partition", "offset", "definition_id", "instance_id")
_HOLD_KEY = ("definition_id", "correlation_key")
_HOLD_COLUMNS = (
    *_HOLD_KEY,
    "trigger_hash",
    "definition_version",
    "held_since",
    "due_at",
    "variables",
    "document",
    "missing",
    "cause",
    "counts",
    "cooldown_until",
    "windows",
)


def batch_statements(plan: CommitPlan, instance_inserts: bool = True) -> list[Statement]:
    """The statements that write `plan`, skipping tables with nothing to write
    (and its new instances, without `instance_inserts`: they are copied first).

    Checks come first (version, consumed rows), then deletes, then inserts, so a
    timer consumed and re-scheduled in one batch is deleted before it is inserted.
    """
    candidates: list[Statement | None] = [
        _instance_inserts(plan.inserts) if instance_inserts else None,
        _instance_updates(plan.updates),
        *_hold_statements(plan),
        _keys("consume_timers", "id", plan.consumed_timers),
        _keys("cancel_timers", "id", plan.cancelled_timers),
        _keys("consume_actions", "key", plan.consumed_actions),
        _columns("insert_timers", plan.timers, _TIMER_COLUMNS),
        _columns("insert_actions", plan.actions, _ACTION_COLUMNS),
        _dead_letters(plan),
    ]
    return [statement for statement in candidates if statement is not None]


def batch_write(plan: CommitPlan, steps: int) -> BatchWrite:
    """The statements and COPYs that write `plan`.

    A small batch (the latency case: a few messages at a time) writes its history and
    ledger rows with two more array statements, so the whole transaction is one
    pipeline and one round trip; a large one COPYs them after the statements.
    """
    if len(plan.history) + len(plan.ledger) > MAX_ROWS_WITHOUT_COPY:
        leading = _instance_copy(plan)
        statements = batch_statements(plan, instance_inserts=not leading)
        return BatchWrite(steps, statements, batch_copies(plan), leading)
    small = [
        _columns("insert_history", plan.history, _HISTORY_COLUMNS),
        _columns("insert_ledger", plan.ledger, _LEDGER_COLUMNS),
    ]
    return BatchWrite(steps, batch_statements(plan) + [statement for statement in small if statement is not None], [])


def batch_copies(plan: CommitPlan) -> list[Copy]:
    """The history and ledger rows, for COPY after the statements: most of a batch's rows.

    COPY formats rows in C; array parameters are built element by element in Python,
    which cost more than everything else a commit does, for large batches.
    """
    copies = [
        (query("copy_history"), plan.history),
        (query("copy_ledger"), list(map(attrgetter(*_LEDGER_COLUMNS), plan.ledger))),
    ]
    return [(sql, rows) for sql, rows in copies if rows]


assert HistoryRow._fields == _HISTORY_COLUMNS, "history rows go to COPY as they are"


def _columns(name: str, rows: Sequence[Any], columns: Sequence[str]) -> Statement | None:
    """One array per column, for a statement that unnests them back into rows."""
    if not rows:
        return None
    return query(name), {column: list(map(attrgetter(column), rows)) for column in columns}


def _keys(name: str, parameter: str, keys: Sequence[str]) -> Statement | None:
    """A statement taking one array of keys."""
    return (query(name), {parameter: list(keys)}) if keys else None


def _instance_copy(plan: CommitPlan) -> list[Copy]:
    """Many new instances by COPY, formatted in C: as array parameters they are built in
    Python element by element, the most of a large batch's statements. The timer and
    outbox rows of the statements refer to them, so this COPY goes first."""
    rows = plan.inserts
    if len(rows) <= MAX_ROWS_WITHOUT_COPY or any(row.started_at is None for row in rows):
        return []  # a start time left to the database's now(): the statement has it
    return [(query("copy_instances"), [(*_instance_values(row), row.new_version) for row in rows])]


_instance_values = attrgetter(*_INSTANCE_COLUMNS)


def _instance_inserts(rows: Sequence[InstanceRow]) -> Statement | None:
    """New instances; their version is the number of steps the batch took them through."""
    statement = _columns("insert_instances", rows, _INSTANCE_COLUMNS)
    if statement is not None:
        statement[1]["version"] = [row.new_version for row in rows]
    return statement


def _instance_updates(rows: Sequence[InstanceRow]) -> Statement | None:
    """Existing instances, each guarded by the version its steps were computed from."""
    statement = _columns("update_instances", rows, _INSTANCE_COLUMNS)
    if statement is not None:
        statement[1]["expected_version"] = [row.expected_version for row in rows]
        statement[1]["version"] = [row.new_version for row in rows]
    return statement


def _hold_statements(plan: CommitPlan) -> list[Statement | None]:
    """Trigger states: deletes and updates guarded by their versions, then first inserts."""
    deletes = _columns("delete_trigger_states", plan.holds.deletes, _HOLD_KEY)
    if deletes is not None:
        deletes[1]["expected_version"] = [row.expected_version for row in plan.holds.deletes]
    updates = _columns("update_trigger_states", plan.holds.updates, _HOLD_COLUMNS)
    if updates is not None:
        updates[1]["expected_version"] = [row.expected_version for row in plan.holds.updates]
        updates[1]["version"] = [row.new_version for row in plan.holds.updates]
    inserts = _columns("insert_trigger_states", plan.holds.inserts, _HOLD_COLUMNS)
    if inserts is not None:
        inserts[1]["version"] = [row.new_version for row in plan.holds.inserts]
    return [deletes, updates, inserts]


assert set(_HOLD_COLUMNS) <= set(HoldRow._fields)


def _dead_letters(plan: CommitPlan) -> Statement | None:
    """Dead letters, flattened from their coordinates."""
    letters = plan.dead_letters
    if not letters:
        return None
    return query("insert_dead_letters"), {
        "topic": [letter.coordinate.topic for letter in letters],
        "partition": [letter.coordinate.partition for letter in letters],
        "offset": [letter.coordinate.offset for letter in letters],
        "reason": [letter.reason for letter in letters],
        "payload": [letter.payload for letter in letters],
        "key": [letter.key for letter in letters],
        "definition_id": [letter.definition_id for letter in letters],
    }
