"""Trigger states as `trigger_holds` rows, and back: shared by both stores so they agree.

JSON is serialised once here, with the same errors in both stores; counts are kept
as a JSON list of ISO timestamps (a ragged list per row does not unnest as an array).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from process_engine.domain.errors import ConcurrencyConflict, StoreError
from process_engine.domain.trigger_state import TriggerState
from process_engine.ports import HoldWrite


class HoldRow(NamedTuple):
    """One `trigger_holds` row to insert (expected_version 0), update or delete."""

    definition_id: str
    correlation_key: str
    trigger_hash: str
    definition_version: int
    held_since: datetime | None
    due_at: datetime | None
    variables: str | None
    document: str | None
    missing: str
    cause: str | None
    counts: str
    cooldown_until: datetime | None
    windows: str | None
    expected_version: int
    new_version: int


class HoldPlan(NamedTuple):
    """The trigger-state rows of one commit, sorted by key so concurrent batches lock alike."""

    inserts: list[HoldRow]
    updates: list[HoldRow]
    deletes: list[HoldRow]


def plan_holds(writes: Sequence[HoldWrite], to_json_text: Any, require_aware: Any) -> HoldPlan:
    """Check and group a batch's trigger-state writes; one key twice in a batch is a conflict."""
    plan = HoldPlan([], [], [])
    seen: set[tuple[str, str]] = set()
    for write in sorted(writes, key=lambda w: (w.definition_id, w.correlation_key)):
        key = (write.definition_id, write.correlation_key)
        if key in seen:
            raise ConcurrencyConflict(f"trigger state of {key[0]} key {key[1]!r} is written twice in one batch")
        seen.add(key)
        if "\x00" in write.correlation_key:
            raise StoreError(f"trigger state of {key[0]}: correlation key contains a NUL character, which text cannot store")
        if write.state is None:
            if write.expected_version:  # never stored: nothing to delete
                plan.deletes.append(_row(write, TriggerState(*key, ""), to_json_text, require_aware))
            continue
        row = _row(write, write.state, to_json_text, require_aware)
        (plan.updates if write.expected_version else plan.inserts).append(row)
    return plan


def _row(write: HoldWrite, state: TriggerState, to_json_text: Any, require_aware: Any) -> HoldRow:
    what = f"trigger state of {write.definition_id} key {write.correlation_key!r}"
    return HoldRow(
        definition_id=write.definition_id,
        correlation_key=write.correlation_key,
        trigger_hash=state.trigger_hash,
        definition_version=state.definition_version,
        held_since=require_aware(state.held_since, "held_since"),
        due_at=require_aware(state.due_at, "hold due_at"),
        variables=None if state.variables is None else to_json_text(state.variables, f"{what} variables"),
        document=None if state.document is None else to_json_text(state.document, f"{what} message"),
        missing=to_json_text(list(state.missing), f"{what} missing"),
        cause=state.cause,
        counts=to_json_text([require_aware(t, "count time").isoformat() for t in state.counts], f"{what} counts"),
        cooldown_until=require_aware(state.cooldown_until, "cooldown_until"),
        windows=None if not state.windows else to_json_text(state.windows, f"{what} windows"),
        expected_version=write.expected_version,
        new_version=write.expected_version + 1,
    )


def trigger_state(row: Mapping[str, Any]) -> TriggerState:
    """A TriggerState from a row whose JSON columns are already decoded."""
    return TriggerState(
        definition_id=row["definition_id"],
        correlation_key=row["correlation_key"],
        trigger_hash=row["trigger_hash"],
        definition_version=row["definition_version"],
        held_since=row["held_since"],
        due_at=row["due_at"],
        variables=row["variables"],
        document=row["document"],
        missing=tuple(row["missing"] or ()),
        cause=row["cause"],
        counts=tuple(datetime.fromisoformat(t) for t in row["counts"] or ()),
        cooldown_until=row["cooldown_until"],
        windows=row.get("windows") or None,
        version=row["version"],
    )
