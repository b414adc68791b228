"""MemoryInstanceStore: the InstanceStore port in dicts, behaving like the PostgreSQL one.

It applies the same CommitPlan as PostgresInstanceStore and keeps JSON as text, so
what comes back is what PostgreSQL would give back (copies, never shared objects).
The contract suite in tests/contract runs against both.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from process_engine.domain.errors import ConcurrencyConflict, StoreError
from process_engine.domain.instance import ACTIVE_STATUSES, InstanceState
from process_engine.domain.trigger_state import TriggerState
from process_engine.ports import (
    ActionClaim,
    DeadLetter,
    DueTimer,
    HistoryRecord,
    HoldWrite,
    InstanceQuery,
    LedgerEntry,
    MessageCoordinate,
    PendingAction,
    Step,
    StoredDefinition,
)
from process_engine.runtime.commit_plan import (
    ActionRow,
    CommitPlan,
    HistoryRow,
    InstanceRow,
    TimerRow,
    canonical_uuid,
    plan_commit,
    query_filters,
    require_aware,
    to_json_text,
)
from process_engine.runtime.hold_rows import HoldRow, trigger_state

LedgerKey = tuple[str, int, int, str]


@dataclass(slots=True)
class _Leased:
    """A timer or outbox row with its claim lease."""

    row: TimerRow | ActionRow | HoldRow
    created_at: datetime
    claimed_until: datetime | None = None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class MemoryInstanceStore:
    """An in-process InstanceStore for tests and single-process runs; thread-safe."""

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._definitions: dict[tuple[str, int], StoredDefinition] = {}
        self._instances: dict[str, InstanceRow] = {}
        self._history: dict[str, list[HistoryRow]] = {}
        self._timers: dict[str, _Leased] = {}
        self._actions: dict[str, _Leased] = {}
        self._ledger: dict[LedgerKey, str | None] = {}
        self._dead_letters: list[DeadLetter] = []
        self._holds: dict[tuple[str, str], _Leased] = {}

    def close(self) -> None:
        """Nothing to release; here so both stores can be closed alike."""

    def ping(self) -> None:
        """Always reachable."""

    def commit(
        self,
        steps: Sequence[Step],
        ledger: Sequence[LedgerEntry] = (),
        dead_letters: Sequence[DeadLetter] = (),
        holds: Sequence[HoldWrite] = (),
    ) -> None:
        """Check the whole batch first, then apply it: all or nothing."""
        self.commit_prepared(self.prepare_commit(steps, ledger, dead_letters, holds))

    def prepare_commit(
        self,
        steps: Sequence[Step],
        ledger: Sequence[LedgerEntry] = (),
        dead_letters: Sequence[DeadLetter] = (),
        holds: Sequence[HoldWrite] = (),
    ) -> CommitPlan:
        """The batch checked and grouped, for `commit_prepared`."""
        return plan_commit(steps, ledger, dead_letters, holds=holds)

    def commit_prepared(self, prepared: CommitPlan, claim: ActionClaim | None = None) -> list[PendingAction]:
        """Check a prepared batch against the store, then apply it: all or nothing; with `claim`, lease its ready rows."""
        with self._lock:
            self._check(prepared)
            self._apply(prepared)
            if claim is None:
                return []
            rows = [leased for key in claim.keys if (leased := self._actions.get(key)) is not None and _free(leased, claim.now)]
            claimed = _lease(rows, claim.now, claim.lease_seconds)
            return [_pending_action(leased, self._instances.get(leased.row.instance_id)) for leased in claimed]

    def load(self, instance_id: str) -> InstanceState | None:
        """One instance by id (None for an unknown or malformed id)."""
        key = _uuid_or_none(instance_id)
        with self._lock:
            row = self._instances.get(key) if key else None
        return _instance(row) if row else None

    def load_many(self, instance_ids: Sequence[str]) -> dict[str, InstanceState]:
        """Several instances by id; unknown or malformed ids are absent."""
        found = {key: self.load(key) for key in instance_ids}
        return {state.id: state for state in found.values() if state is not None}

    def active_by_key(self, definition_id: str, correlation_key: str) -> list[InstanceState]:
        """Running or suspended instances of a definition with this key, oldest first."""
        with self._lock:
            rows = [
                row
                for row in self._instances.values()
                if row.definition_id == definition_id
                and row.correlation_key == correlation_key
                and row.status in ACTIVE_STATUSES
            ]
        rows.sort(key=lambda row: (row.started_at, row.id))
        return [_instance(row) for row in rows]

    def active_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[InstanceState]]:
        """active_by_key for many (definition id, key) pairs; pairs with none are absent."""
        found = {key: self.active_by_key(*key) for key in set(keys)}
        return {key: instances for key, instances in found.items() if instances}

    def active_versions_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[str, int]]]:
        """The (id, version) of what active_by_keys returns, in its order."""
        return {key: [(i.id, i.version) for i in instances] for key, instances in self.active_by_keys(keys).items()}

    def find_instances(self, query: InstanceQuery) -> list[InstanceState]:
        """Instances matching the filters, newest first."""
        filters = query_filters(query)
        wanted = {name: filters[name] for name in ("status", "definition_id", "correlation_key")}
        trace = filters["trace_id"]
        with self._lock:
            rows = [
                row
                for row in self._instances.values()
                if all(value is None or getattr(row, name) == value for name, value in wanted.items())
                and (trace is None or self._in_trace(row.id, trace))
            ]
        rows.sort(key=lambda row: (row.started_at, row.id), reverse=True)
        start = filters["offset"]
        return [_instance(row) for row in rows[start : start + filters["limit"]]]

    def _in_trace(self, instance_id: str, trace_id: str) -> bool:
        """Whether a history row of the instance carries `trace_id` (as the SQL store asks)."""
        return any(row.trace_id == trace_id for row in self._history.get(instance_id, ()))

    def history(self, instance_id: str) -> list[HistoryRecord]:
        """An instance's history, oldest first."""
        key = _uuid_or_none(instance_id)
        with self._lock:
            rows = list(self._history.get(key, ())) if key else []
        rows.sort(key=lambda row: (datetime.fromisoformat(row.timestamp), row.id))
        return [_history_record(row) for row in rows]

    def seen_messages(self, coordinates: Sequence[MessageCoordinate]) -> set[MessageCoordinate]:
        """Which of these messages are already in the trigger ledger."""
        with self._lock:
            seen = {key[:3] for key in self._ledger}
        return {c for c in coordinates if (c.topic, c.partition, c.offset) in seen}

    def ledger_marks(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The highest offset in the trigger ledger per (topic, partition); absent if none."""
        wanted = set(partitions)
        marks: dict[tuple[str, int], int] = {}
        with self._lock:
            for topic, partition, offset, _ in self._ledger:
                if (topic, partition) in wanted and offset > marks.get((topic, partition), -1):
                    marks[(topic, partition)] = offset
        return marks

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead-lettered messages."""
        with self._lock:
            return list(reversed(self._dead_letters))[:limit]

    def activity_visits(self, since: datetime) -> dict[tuple[str, str], int]:
        """Instances with history on each activity since `since`, by (definition id, activity id)."""
        require_aware(since, "visits since")
        visitors: dict[tuple[str, str], set[str]] = {}
        with self._lock:
            for instance_id, rows in self._history.items():
                instance = self._instances.get(instance_id)
                for row in rows:
                    if instance is not None and row.activity_id is not None and datetime.fromisoformat(row.timestamp) >= since:
                        visitors.setdefault((instance.definition_id, row.activity_id), set()).add(instance_id)
        return {key: len(instances) for key, instances in visitors.items()}

    def pending_timers(self, instance_id: str) -> list[DueTimer]:
        """An instance's timers that have not fired yet, soonest first."""
        key = _uuid_or_none(instance_id)
        with self._lock:
            rows = [leased.row for leased in self._timers.values() if leased.row.instance_id == key]
        return [_due_timer(row) for row in sorted(rows, key=lambda row: (row.due_at, row.id))]

    def save_definition(self, definition: StoredDefinition) -> StoredDefinition:
        """Store a definition; the same content hash gives back the stored version."""
        text = to_json_text(definition.definition, f"definition {definition.id}")
        with self._lock:
            versions = [v for (i, v) in self._definitions if i == definition.id]
            for version in versions:
                stored = self._definitions[(definition.id, version)]
                if stored.content_hash == definition.content_hash:
                    return _copy_definition(stored)
            stored = replace(
                definition,
                version=max(versions, default=0) + 1,
                definition=json.loads(text),
                created_at=self._clock(),
            )
            self._definitions[(stored.id, stored.version)] = stored
        return _copy_definition(stored)

    def load_definition(self, definition_id: str, version: int) -> StoredDefinition | None:
        """One stored definition version."""
        with self._lock:
            stored = self._definitions.get((definition_id, version))
        return _copy_definition(stored) if stored else None

    def definition_versions(self, definition_id: str) -> list[StoredDefinition]:
        """Every stored version of a definition, newest first."""
        with self._lock:
            stored = [d for (i, _), d in self._definitions.items() if i == definition_id]
        return [_copy_definition(d) for d in sorted(stored, key=lambda d: d.version, reverse=True)]

    def claim_due_timers(self, now: datetime, limit: int, lease_seconds: float) -> list[DueTimer]:
        """Timers due at `now`, leased for `lease_seconds`."""
        require_aware(now, "claim time")
        with self._lock:
            due = [t for t in self._timers.values() if t.row.due_at <= now and _free(t, now)]
            due.sort(key=lambda leased: (leased.row.due_at, leased.row.id))
            claimed = _lease(due[:limit], now, lease_seconds)
        return [_due_timer(leased.row) for leased in claimed]

    def next_timer_due(self) -> datetime | None:
        """When the earliest timer becomes claimable."""
        with self._lock:
            times = [t.claimed_until or t.row.due_at for t in self._timers.values()]
        return min(times, default=None)

    def claim_actions(self, now: datetime, limit: int, lease_seconds: float) -> list[PendingAction]:
        """Outbox actions ready for delivery, leased for `lease_seconds`."""
        require_aware(now, "claim time")
        with self._lock:
            ready = [a for a in self._actions.values() if _free(a, now)]
            ready.sort(key=lambda leased: (leased.created_at, leased.row.idempotency_key))
            claimed = _lease(ready[:limit], now, lease_seconds)
            return [_pending_action(leased, self._instances.get(leased.row.instance_id)) for leased in claimed]

    def load_trigger_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TriggerState]:
        """The stored trigger state of each (definition id, key); keys with none are absent."""
        with self._lock:
            found = [self._holds[key].row for key in set(keys) if key in self._holds]
        return {(row.definition_id, row.correlation_key): _trigger_state(row) for row in found}

    def claim_due_holds(self, now: datetime, limit: int, lease_seconds: float) -> list[TriggerState]:
        """Trigger states whose hold is due at `now`, leased for `lease_seconds`."""
        require_aware(now, "claim time")
        with self._lock:
            due = [h for h in self._holds.values() if h.row.due_at is not None and h.row.due_at <= now and _free(h, now)]
            due.sort(key=lambda leased: (leased.row.due_at, leased.row.definition_id, leased.row.correlation_key))
            claimed = _lease(due[:limit], now, lease_seconds)
        return [_trigger_state(leased.row) for leased in claimed]

    def next_hold_due(self) -> datetime | None:
        """When the earliest hold becomes claimable."""
        with self._lock:
            times = [h.claimed_until or h.row.due_at for h in self._holds.values() if h.row.due_at is not None]
        return min(times, default=None)

    def _check(self, plan: CommitPlan) -> None:
        """Raise what PostgreSQL would raise for this plan, in the same order."""
        for row in plan.inserts:
            if row.id in self._instances:
                raise ConcurrencyConflict(f"committing: instance {row.id} already exists")
        for row in plan.updates:
            stored = self._instances.get(row.id)
            if stored is None or stored.new_version != row.expected_version:
                raise ConcurrencyConflict(
                    f"committing: instance {row.id} is no longer at version "
                    f"{row.expected_version}: another writer changed or removed it"
                )
        for row in [*plan.inserts, *plan.updates]:
            if (row.definition_id, row.definition_version) not in self._definitions:
                raise StoreError(
                    f"committing failed: instance {row.id} refers to definition "
                    f"{row.definition_id} v{row.definition_version}, which is not stored"
                )
        _require(plan.consumed_timers, self._timers, "timer", "fired or cancelled")
        _require(plan.consumed_actions, self._actions, "action", "completed")
        gone = {*plan.consumed_timers, *plan.cancelled_timers}
        for timer in plan.timers:
            if timer.id in self._timers and timer.id not in gone:
                raise ConcurrencyConflict(f"committing: timer {timer.id} already exists")
        for entry in plan.ledger:
            if entry.key in self._ledger:
                raise ConcurrencyConflict(f"committing: trigger ledger entry {entry.key} exists")
        self._check_holds(plan)

    def _check_holds(self, plan: CommitPlan) -> None:
        """Trigger states: a first one must not exist yet, the others must be at their expected version."""
        for row in plan.holds.inserts:
            if (row.definition_id, row.correlation_key) in self._holds:
                raise ConcurrencyConflict(f"committing: trigger state of {row.definition_id} key {row.correlation_key!r} already exists")
        for row in [*plan.holds.updates, *plan.holds.deletes]:
            stored = self._holds.get((row.definition_id, row.correlation_key))
            if stored is None or stored.row.new_version != row.expected_version:
                raise ConcurrencyConflict(
                    f"committing: trigger state of {row.definition_id} key {row.correlation_key!r} is no longer "
                    f"at version {row.expected_version}: another writer changed or completed it"
                )

    def _apply(self, plan: CommitPlan) -> None:
        """Write a checked plan."""
        now = self._clock()
        for row in plan.inserts:
            self._instances[row.id] = row._replace(started_at=row.started_at or now)
        for row in plan.updates:
            started_at = row.started_at or self._instances[row.id].started_at
            self._instances[row.id] = row._replace(started_at=started_at)
        for timer_id in [*plan.consumed_timers, *plan.cancelled_timers]:
            self._timers.pop(timer_id, None)
        for key in plan.consumed_actions:
            del self._actions[key]
        for timer in plan.timers:
            self._timers[timer.id] = _Leased(timer, now)
        for history in plan.history:
            self._history.setdefault(history.instance_id, []).append(history)
        for action in plan.actions:
            self._actions.setdefault(action.idempotency_key, _Leased(action, now))
        for entry in plan.ledger:
            self._ledger[entry.key] = entry.instance_id
        self._dead_letters.extend(plan.dead_letters)
        for row in plan.holds.deletes:
            del self._holds[(row.definition_id, row.correlation_key)]
        for row in [*plan.holds.updates, *plan.holds.inserts]:
            self._holds[(row.definition_id, row.correlation_key)] = _Leased(row, now)  # a write ends any claim


def _require(keys: Sequence[str], table: dict[str, _Leased], kind: str, fate: str) -> None:
    """Consumed rows must still exist: that is what makes them fire once."""
    for key in keys:
        if key not in table:
            raise ConcurrencyConflict(f"committing: {kind} {key} was already {fate} by another writer")


def _free(leased: _Leased, now: datetime) -> bool:
    """Not claimed, or its lease ran out."""
    return leased.claimed_until is None or leased.claimed_until <= now


def _lease(rows: list[_Leased], now: datetime, lease_seconds: float) -> list[_Leased]:
    """Claim rows until now + lease."""
    until = now + timedelta(seconds=lease_seconds)
    for leased in rows:
        leased.claimed_until = until
    return rows


def _uuid_or_none(value: str) -> str | None:
    """The canonical UUID text, or None: a malformed id names no instance."""
    try:
        return canonical_uuid(value, "instance id")
    except StoreError:
        return None


def _instance(row: InstanceRow) -> InstanceState:
    """A fresh InstanceState from a stored row."""
    return InstanceState.from_row(
        id=row.id,
        definition_id=row.definition_id,
        definition_version=row.definition_version,
        status=row.status,
        variables=json.loads(row.variables),
        state=json.loads(row.state),
        correlation_key=row.correlation_key,
        started_at=row.started_at,
        completed_at=row.completed_at,
        version=row.new_version,
    )


def _history_record(row: HistoryRow) -> HistoryRecord:
    """A stored history row as the port's dataclass."""
    return HistoryRecord(
        event_id=row.id,
        instance_id=row.instance_id,
        activity_id=row.activity_id,
        event_type=row.event_type,
        timestamp=datetime.fromisoformat(row.timestamp),
        data=json.loads(row.data) if row.data is not None else None,
        message=row.message,
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        trace_id=row.trace_id,
    )


def _trigger_state(row: HoldRow) -> TriggerState:
    """A fresh TriggerState from a stored row (its JSON decoded, as PostgreSQL's jsonb would be)."""
    fields = row._asdict()
    for name in ("variables", "document", "missing", "counts", "windows"):
        fields[name] = json.loads(fields[name]) if fields[name] is not None else None
    fields["version"] = row.new_version
    return trigger_state(fields)


def _due_timer(row: TimerRow) -> DueTimer:
    """A claimed timer as the port's dataclass."""
    return DueTimer(row.id, row.instance_id, row.token_id, row.activity_id, row.due_at, row.kind, row.trace_context)


def _pending_action(leased: _Leased, instance: InstanceRow | None) -> PendingAction:
    """A claimed outbox row as the port's dataclass."""
    row = leased.row
    return PendingAction(
        idempotency_key=row.idempotency_key,
        instance_id=row.instance_id,
        token_id=row.token_id,
        activity_id=row.activity_id,
        action=row.action,
        config=json.loads(row.config),
        attempt=row.attempt,
        created_at=leased.created_at,
        definition_id=instance.definition_id if instance is not None else None,
        trace_context=row.trace_context,
    )


def _copy_definition(stored: StoredDefinition) -> StoredDefinition:
    """A copy whose definition document the caller may change freely."""
    return replace(stored, definition=json.loads(json.dumps(stored.definition)))
