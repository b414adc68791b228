"""The ports: what the engine's host needs from the outside world, as Protocols.

Adapters implement these; the domain and the walker never import an adapter.
What a batch makes one of per message or per instance is a named tuple: a frozen
dataclass costs three times as much to build.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from process_engine.domain.instance import InstanceState
from process_engine.domain.trigger_state import TriggerState
from process_engine.engine.commands import Command


class MessageCoordinate(NamedTuple):
    """Where a Kafka message sits: the trigger ledger's key."""

    topic: str
    partition: int
    offset: int


class IncomingMessage(NamedTuple):
    """A message read from a trigger topic, not yet decoded."""

    coordinate: MessageCoordinate
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None
    traceparent: str | None = None  # W3C trace context from the message's headers, when it has them
    tracestate: str | None = None


class IncomingBatch:
    """A batch of trigger messages as columns; each IncomingMessage is built only when asked for.

    Most telemetry is screened out from its value and key alone, so a consumer hands
    these over instead of building a message per record: `message(i)` builds (once)
    the ones that matter.
    """

    __slots__ = ("topics", "values", "keys", "_build", "_built")

    def __init__(self, topics: Sequence[str], values: Sequence[bytes | None], keys: Sequence[bytes | None],
                 build: Callable[[int], IncomingMessage]):
        self.topics, self.values, self.keys = topics, values, keys
        self._build = build
        self._built: dict[int, IncomingMessage] = {}

    @classmethod
    def of(cls, messages: Sequence[IncomingMessage]) -> IncomingBatch:
        """A batch of messages already built."""
        return cls([m.coordinate.topic for m in messages], [m.value for m in messages], [m.key for m in messages],
                   messages.__getitem__)

    def __len__(self) -> int:
        return len(self.values)

    def message(self, index: int) -> IncomingMessage:
        """The message at `index`, built on first use."""
        built = self._built.get(index)
        if built is None:
            built = self._built[index] = self._build(index)
        return built


class Step(NamedTuple):
    """The outcome of one walker step for one instance, committed all or nothing.

    `expected_version` is the instance version the step was computed from (None for a
    new instance). The store bumps the version; a mismatch raises ConcurrencyConflict.
    `commands` are what is still to be done: history rows, timers to create or drop,
    actions for the outbox. `consumed_timer` / `consumed_action` name the timer row or
    outbox row this step used up; it must still exist, so it is used exactly once.
    """

    instance: InstanceState
    expected_version: int | None
    commands: tuple[Command, ...] = ()
    correlation_id: str | None = None
    causation_id: str | None = None
    consumed_timer: str | None = None
    consumed_action: str | None = None
    # The trace context of a message that refreshed or cancelled the instance from a
    # trace of its own: the step's span links to it (its parent stays the instance's).
    linked_trace: str | None = None


class LedgerEntry(NamedTuple):
    """A trigger message that started (or refreshed) an instance: never processed twice."""

    coordinate: MessageCoordinate
    definition_id: str
    instance_id: str | None


class HoldWrite(NamedTuple):
    """A key's trigger state (hold, counts, cooldown) to save, or to delete when `state` is None.

    Guarded by the version it was read at: 0 means it was not stored, so it must not
    exist yet; a mismatch raises ConcurrencyConflict, so a message updating a hold and
    a replica completing it cannot both win.
    """

    definition_id: str
    correlation_key: str
    state: TriggerState | None
    expected_version: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be processed, kept for inspection and skipped."""

    coordinate: MessageCoordinate
    reason: str
    payload: bytes | None = None
    key: bytes | None = None
    definition_id: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One row of `process_history` as read back."""

    event_id: str
    instance_id: str
    activity_id: str | None
    event_type: str
    timestamp: datetime
    data: dict[str, Any] | None
    message: str | None
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_id: str | None = None  # of the instance's trace: look it up in Jaeger


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A timer claimed for firing."""

    timer_id: str
    instance_id: str
    token_id: str
    activity_id: str
    due_at: datetime
    kind: str
    trace_context: str | None = None  # the instance's W3C traceparent when it was scheduled


@dataclass(frozen=True, slots=True)
class PendingAction:
    """An outbox row claimed for delivery."""

    idempotency_key: str
    instance_id: str
    token_id: str
    activity_id: str
    action: str
    config: Any
    attempt: int
    created_at: datetime
    definition_id: str | None = None  # of its instance, for the action's context and logs
    trace_context: str | None = None  # the instance's W3C traceparent: the attempt's span parent
    # The instance and its version as the commit that leased the row left them: its
    # outcome need not read it back (a conflict, if it moved on since, reads it again).
    known: tuple[InstanceState, int] | None = field(default=None, compare=False, repr=False)


class ActionClaim(NamedTuple):
    """Outbox rows a commit leases in its own transaction, to be started as soon as it returns."""

    keys: Sequence[str]  # idempotency keys of rows the commit writes
    now: datetime
    lease_seconds: float


class ActionClaimer(Protocol):
    """Who delivers actions (the outbox worker): it takes rows at commit, so none waits for a claim round trip."""

    def reserve(self, keys: Sequence[str]) -> ActionClaim | None:
        """The rows of these (in order) it can start at once, their slots held until `claimed`; None for none."""

    def claimed(self, claim: ActionClaim | None, actions: Sequence[PendingAction], left: int) -> None:
        """After the commit: `actions` were leased to it (start them) and the rest of `claim`'s slots are free again;
        `left` rows the commit wrote are for its claim loop (0 when the commit failed)."""


@dataclass(frozen=True, slots=True)
class StoredDefinition:
    """A definition as the registry keeps it."""

    id: str
    version: int
    name: str
    definition: dict[str, Any]
    content_hash: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class InstanceQuery:
    """Filters for listing instances."""

    status: str | None = None
    definition_id: str | None = None
    limit: int = 100
    extra: dict[str, Any] = field(default_factory=dict)
    offset: int = 0  # skip this many of the newest first: the console's pages


class InstanceStore(Protocol):
    """Durable home of instances, history, timers, the outbox and the trigger ledger."""

    def commit(
        self,
        steps: Sequence[Step],
        ledger: Sequence[LedgerEntry] = (),
        dead_letters: Sequence[DeadLetter] = (),
        holds: Sequence[HoldWrite] = (),
    ) -> None:
        """Commit every step, ledger entry, dead letter and trigger state in one transaction.

        Raises ConcurrencyConflict if any step's or trigger state's expected version is
        stale or its consumed timer/action is gone; nothing is written then.
        """

    def prepare_commit(
        self,
        steps: Sequence[Step],
        ledger: Sequence[LedgerEntry] = (),
        dead_letters: Sequence[DeadLetter] = (),
        holds: Sequence[HoldWrite] = (),
    ) -> Any:
        """The CPU half of `commit`, with no IO: check the batch and shape its rows.

        Lets one thread do it while another waits on the database. Raises StoreError
        (a value the store cannot hold, a conflict within the batch); nothing is written.
        """

    def commit_prepared(self, prepared: Any, claim: ActionClaim | None = None) -> list[PendingAction]:
        """The IO half of `commit`: write what `prepare_commit` returned, in one transaction.

        With `claim`, the outbox rows of its keys that are ready and free once the
        batch is written are leased in the same transaction and returned, as
        `claim_actions` returns them; otherwise it returns [].

        Raises ConcurrencyConflict as `commit` does; nothing is written (or leased) then.
        """

    def load(self, instance_id: str) -> InstanceState | None:
        """One instance by id."""

    def load_many(self, instance_ids: Sequence[str]) -> dict[str, InstanceState]:
        """Several instances by id at once; unknown ids are absent."""

    def active_by_key(self, definition_id: str, correlation_key: str) -> list[InstanceState]:
        """Running or suspended instances of a definition with this key, oldest first."""

    def active_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[InstanceState]]:
        """active_by_key for many (definition id, key) pairs at once; pairs with none are absent."""

    def active_versions_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[str, int]]]:
        """The (id, version) of what active_by_keys would return, in its order: to tell which copies kept are current."""

    def find_instances(self, query: InstanceQuery) -> list[InstanceState]:
        """Instances matching the filters, newest first."""

    def history(self, instance_id: str) -> list[HistoryRecord]:
        """An instance's history, oldest first."""

    def seen_messages(self, coordinates: Sequence[MessageCoordinate]) -> set[MessageCoordinate]:
        """Which of these messages are already in the trigger ledger."""

    def ledger_marks(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The highest offset in the trigger ledger per (topic, partition); absent if none."""

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead-lettered messages."""

    def activity_visits(self, since: datetime) -> dict[tuple[str, str], int]:
        """How many instances have history on each activity since `since`, by (definition id, activity id)."""

    def pending_timers(self, instance_id: str) -> list[DueTimer]:
        """An instance's timers that have not fired yet, soonest first."""

    def save_definition(self, definition: StoredDefinition) -> StoredDefinition:
        """Store a definition; same id and content hash gives back the stored version,
        a new hash gets the next version number."""

    def load_definition(self, definition_id: str, version: int) -> StoredDefinition | None:
        """One stored definition version."""

    def definition_versions(self, definition_id: str) -> list[StoredDefinition]:
        """Every stored version of a definition, newest first."""

    def claim_due_timers(self, now: datetime, limit: int, lease_seconds: float) -> list[DueTimer]:
        """Timers due at `now`, claimed for `lease_seconds` so no other replica takes them."""

    def next_timer_due(self) -> datetime | None:
        """When the earliest unclaimed timer is due."""

    def claim_actions(self, now: datetime, limit: int, lease_seconds: float) -> list[PendingAction]:
        """Outbox actions ready for delivery, claimed for `lease_seconds`."""

    def load_trigger_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TriggerState]:
        """The stored trigger state of each (definition id, correlation key); keys with none are absent."""

    def claim_due_holds(self, now: datetime, limit: int, lease_seconds: float) -> list[TriggerState]:
        """Trigger states whose `for` hold is due at `now`, claimed for `lease_seconds`."""

    def next_hold_due(self) -> datetime | None:
        """When the earliest hold becomes claimable."""


class KeyFilter(Protocol):
    """The answer of an active-key sync: which pairs, or which keys of one definition, may have an active instance."""

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (definition id, key) pairs, of these, that may have one."""

    def keys(self, definition_id: str, keys: Collection[str]) -> list[str]:
        """The keys, of these of one definition, that may have one: a batch's keys without a pair built for each."""


class PendingSync(Protocol):
    """An `ActiveKeys.start_sync` under way: `result` gives its filter (once it has caught up); `close` lets it go."""

    def result(self, timeout: float | None = None) -> KeyFilter:
        """The filter of `possibly_active`, valid from the start of the sync on (raises when it cannot be had)."""

    def close(self) -> None:
        """Finish the sync if `result` was not asked for, freeing what it holds."""


class AnsweredSync:
    """A sync with its answer already in hand."""

    def __init__(self, answer: KeyFilter):
        self.answer = answer

    def result(self, timeout: float | None = None) -> KeyFilter:
        """The filter."""
        return self.answer

    def close(self) -> None:
        """Nothing is held."""


class ActiveKeys(Protocol):
    """Which (definition id, correlation key) pairs may have an active instance, without a query per batch.

    An index never misses a pair: whatever a commit that finished before the call
    made active (a start, a retry, from any process) is counted. It may name pairs
    that have none any more; those are looked up in the store as before.
    """

    def sync(self) -> KeyFilter:
        """Catch up with every commit finished before this call; returns the filter of `possibly_active`, valid from now on."""

    def start_sync(self) -> PendingSync:
        """`sync` begun now and read back when its `result` is asked for, so the caller works meanwhile."""

    def possibly_active(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs, of these, that may have an active instance now (all of them when in doubt)."""

    def close(self) -> None:
        """Stop following the store."""
