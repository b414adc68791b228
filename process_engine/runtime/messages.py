"""Trigger messages in: decoding, matching, starts and refreshes, one transaction per batch."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.errors import ConcurrencyConflict, ExpressionError, StoreError, StoreUnavailable
from process_engine.domain.instance import InstanceState
from process_engine.engine import Cancel, Start, VariablesRefreshed
from process_engine.engine.commands import InstanceCompleted, InstanceFailed, RecordHistory
from process_engine.engine.holds import HoldEvent
from process_engine.engine.triggers import Match, correlation_key, is_queued, match_screened, plan
from process_engine.engine.walker import new_instance
from process_engine.ports import (
    ActionClaimer,
    ActiveKeys,
    DeadLetter,
    IncomingBatch,
    IncomingMessage,
    InstanceStore,
    LedgerEntry,
    MessageCoordinate,
    Step,
)
from process_engine.runtime.message_decoding import MessageLimits, Refused, decode_message
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.runtime.retry import ConflictRetry
from process_engine.runtime.screening import Entry, Screened, ScreenedBatch, TopicScreen, screen_all, worth_asking
from process_engine.runtime.trace_context import join_trace
from process_engine.runtime.unit_of_work import InlineAction, UnitOfWork
from process_engine.runtime.windows import ledger_windowed, match_windowed

log = logging.getLogger("process_engine.dispatcher")
MAX_DEAD_LETTER_BYTES = 64 * 1024
SCHEDULE_TOPIC = "schedule:{}"  # the trigger ledger's topic for cron ticks


def utc_now() -> datetime:
    """The real clock; tests inject their own."""
    return datetime.now(timezone.utc)


@dataclass
class BatchResult:
    """What one batch of messages did."""

    started: list[str] = field(default_factory=list)
    refreshed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    steps: list[Step] = field(default_factory=list)


class PoisonedMessage(Exception):
    """A message whose handling raised: the batch is worked through again without it."""

    def __init__(self, message: IncomingMessage, reason: str):
        super().__init__(reason)
        self.coordinate = message.coordinate
        self.reason = reason


def error_text(error: BaseException) -> str:
    """An error as a dead letter or a failed instance records it: its type and text."""
    return f"{type(error).__name__}: {error}"


@dataclass
class PreparedBatch:
    """A batch of messages worked through but not yet committed."""

    messages: Sequence[IncomingMessage] | IncomingBatch
    unit: UnitOfWork
    result: BatchResult
    began: float = field(default_factory=time.perf_counter)


class MessageDispatcher:
    """The message half of the Dispatcher: applies trigger messages through the walker, one commit per batch.

    Thread-safe by construction: it keeps no state between calls; concurrent writers
    meet in the store's optimistic concurrency and are retried here.
    """

    def __init__(
        self,
        store: InstanceStore,
        registry: DefinitionRegistry,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        inline_actions: Mapping[str, InlineAction] | None = None,
        retry: ConflictRetry = ConflictRetry(),
        on_steps: Callable[[list[Step]], None] | None = None,
        limits: MessageLimits = MessageLimits(),
        refresh_interval: float = 0.0,
        on_holds: Callable[[list[HoldEvent]], None] | None = None,
        trace_of: Callable[[IncomingMessage], str | None] | None = None,
        active_keys: ActiveKeys | None = None,
    ):
        self.store = store
        self.registry = registry
        self.clock = clock
        self.new_id = new_id
        self.inline_actions = dict(inline_actions or {})
        self.retry = retry
        self.on_steps = on_steps
        self.limits = limits
        self.refresh_interval = refresh_interval  # HISTORY_REFRESH_INTERVAL, seconds (0: every change)
        self.on_holds = on_holds  # told what the trigger hold rules did, once committed
        self.trace_of = trace_of  # the trace context of an instance a message starts (Tracing.instance_trace)
        self.active_keys = active_keys  # spares the query for keys no instance is active for
        self.claimer: ActionClaimer | None = None  # the outbox worker, once built: takes action rows at commit

    # -- the unit-of-work loop ------------------------------------------------
    def _run(self, work: Callable[[UnitOfWork], Any]) -> tuple[Any, list[Step]]:
        """Run `work` in a fresh unit of work and commit; on a conflict, re-read and redo."""
        for attempt in range(1, self.retry.max_attempts + 1):
            unit = UnitOfWork(self.store, self.registry, self.clock(), self.inline_actions, claimer=self.claimer)
            result = work(unit)
            try:
                steps = unit.commit()
            except ConcurrencyConflict:
                if attempt == self.retry.max_attempts:
                    raise
                time.sleep(self.retry.delay(attempt))
                continue
            self._committed(unit, steps)
            return result, steps
        raise AssertionError("unreachable")

    def _committed(self, unit: UnitOfWork, steps: list[Step]) -> None:
        """Tell the listeners what a committed unit of work did."""
        if self.on_steps is not None and steps:
            self.on_steps(steps)
        if self.on_holds is not None and unit.holds.events:
            self.on_holds(list(unit.holds.events))

    # -- messages ---------------------------------------------------------------
    def handle_batch(self, messages: Sequence[IncomingMessage]) -> BatchResult:
        """Process a batch of trigger-topic messages in one transaction.

        A message the database refuses (a NUL character in text, a number too big
        for JSON) would fail every retry of its batch and stop the consumer: when a
        batch fails that way, it is split in halves, each committed on its own, until
        the refused message is alone and dead-lettered. (One at a time would cost a
        transaction per message of a large batch.)

        Raises:
            StoreUnavailable: the database is down; nothing was committed.
        """
        return self._handle_or_split(messages, split=False)

    def _handle_or_split(self, messages: Sequence[IncomingMessage], split: bool) -> BatchResult:
        try:
            return self._handle_batch(messages)
        except (StoreUnavailable, ConcurrencyConflict):
            raise
        except Exception as error:  # a value the store refuses, or anything else one message caused
            if len(messages) == 1:
                return self._refused(messages[0], error)
            if not split:
                log.warning("a batch of %d message(s) failed (%s); retrying it in halves", len(messages), error_text(error))
        middle = len(messages) // 2
        result = BatchResult()
        for half in (messages[:middle], messages[middle:]):  # in order: a key's messages stay in sequence
            part = self._handle_or_split(half, split=True)
            result.started += part.started
            result.refreshed += part.refreshed
            result.dead_lettered += part.dead_lettered
            result.duplicates += part.duplicates
            result.steps += part.steps
        return result

    def _refused(self, message: IncomingMessage, error: Exception) -> BatchResult:
        """Dead-letter one message whose outcome the database refused to store, or that raised.

        An error that is not about the message (permissions, a missing table) fails
        this write too, and so still stops the consumer loudly.
        """
        text = f"cannot be stored: {error}" if isinstance(error, StoreError) else error_text(error)
        reason = text.replace("\x00", "\\x00")

        def work(unit: UnitOfWork) -> BatchResult:
            result = BatchResult()
            self._dead_letter(unit, message, reason, result)
            return result

        return self._run(work)[0]

    def _handle_batch(self, messages: Sequence[IncomingMessage]) -> BatchResult:
        poisoned: dict[MessageCoordinate, str] = {}
        while True:  # each round poisons one more message, so it ends
            try:
                result, steps = self._run(self._batch_work(IncomingBatch.of(messages), poisoned=poisoned))
            except PoisonedMessage as poison:
                poisoned[poison.coordinate] = poison.reason
                continue
            result.steps = steps
            return result

    def _batch_work(
        self,
        batch: IncomingBatch,
        marks: Mapping[tuple[str, int], int] | None = None,
        poisoned: Mapping[MessageCoordinate, str] | None = None,
    ) -> Callable[[UnitOfWork], BatchResult]:
        """The work of a batch; messages in `poisoned` raised before and are dead-lettered with that reason."""

        def work(unit: UnitOfWork) -> BatchResult:
            # The index's round trip needs nothing from the batch: it is out while the batch is screened.
            synced = self.active_keys.start_sync() if self.active_keys is not None else None
            try:
                result = BatchResult()
                screens = {topic: TopicScreen.of(self.registry.for_topic(topic), self.limits) for topic in set(batch.topics)}
                screened = ScreenedBatch(batch, self._fresh(unit, batch, marks, poisoned, result), screens,
                                         lambda index, screen: self._on_its_own(unit, batch.message(index), screen, result),
                                         keep_documents=bool(unit.known or unit.carried))  # the batch before read active instances
                known = unit.stored_active
                # One query for the active instances of the keys the index cannot rule out (for
                # telemetry, mostly none); the messages that then provably do nothing are left out.
                asked = sorted(worth_asking(synced, screened.key_sets(), known))
                found = unit.read_active(asked) if asked else {}
                kept, touched = screened.kept({pair for pair, states in found.items() if states}, unit.carried_keys)
                if kept:  # what the index ruled out is known to have none
                    unit.adopt_active([pair for pair in touched if pair not in known], found)
                    unit.holds.prefetch(touched)  # the same for the keys of definitions with hold rules
                for message, document, entries, _ in kept:
                    self._message(unit, message, document, entries, result)
                self._start_queued(unit)
                return result
            finally:
                if synced is not None:
                    synced.close()

        return work

    def _fresh(self, unit: UnitOfWork, batch: IncomingBatch, marks: Mapping[tuple[str, int], int] | None,
               poisoned: Mapping[MessageCoordinate, str] | None, result: BatchResult) -> Sequence[int]:
        """The indices of the messages to screen: not redeliveries the ledger has (with `marks`, only messages
        at or below their partition's mark can be), nor poisoned (dead-lettered here)."""
        everything = range(len(batch))
        to_check = [batch.message(i).coordinate for i in everything] if marks is None else []
        if marks and any(mark >= 0 for mark in marks.values()):
            to_check = [c for i in everything if (c := batch.message(i).coordinate).offset <= marks.get((c.topic, c.partition), -1)]
        seen = self.store.seen_messages(to_check) if to_check else set()
        if not (seen or poisoned):
            return everything
        fresh = []
        for index in everything:
            message = batch.message(index)
            if message.coordinate in seen:
                result.duplicates += 1
            elif poisoned and message.coordinate in poisoned:
                self._dead_letter(unit, message, poisoned[message.coordinate], result)
            else:
                fresh.append(index)
        return fresh

    # -- pipelined batches: the work of one overlaps the commit of the one before --
    def ledger_marks(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The trigger ledger's highest offset per (topic, partition), for `prepare_batch`."""
        return self.store.ledger_marks(partitions)

    def prepare_batch(
        self,
        messages: Sequence[IncomingMessage] | IncomingBatch,
        after: PreparedBatch | None = None,
        marks: Mapping[tuple[str, int], int] | None = None,
    ) -> PreparedBatch:
        """Do a batch's work without committing it.

        `after` is the batch before, prepared and maybe still committing: this one
        builds on the instances as that one leaves them. If `after` then fails to
        commit, this one must be thrown away and the messages handled again.

        `marks` are the ledger's highest offsets per partition (`ledger_marks`), read
        since the partitions were assigned: only messages at or below their
        partition's mark (a partition without one has none) can be redeliveries, so
        only those are looked up in the ledger, saving a round trip per batch.

        Raises:
            StoreError: a read failed, or the store refuses a value; handle the messages
                with `handle_batch` instead.
        """
        began = time.perf_counter()
        batch = messages if isinstance(messages, IncomingBatch) else IncomingBatch.of(messages)
        poisoned: dict[MessageCoordinate, str] = {}
        while True:  # a poisoned message leaves its unit half-done: start a fresh one without it
            unit = UnitOfWork(self.store, self.registry, self.clock(), self.inline_actions, after.unit if after else None, self.claimer)
            try:
                result = self._batch_work(batch, marks, poisoned)(unit)
            except PoisonedMessage as poison:
                poisoned[poison.coordinate] = poison.reason
                continue
            unit.prepare()  # here, so the committer thread is left with little but waiting on IO
            return PreparedBatch(messages, unit, result, began)

    def commit_prepared(self, prepared: PreparedBatch) -> BatchResult:
        """Commit a prepared batch (any thread), then tell the step listeners.

        Raises:
            StoreError: nothing was committed; handle the messages with `handle_batch`.
        """
        steps = prepared.unit.commit()
        self._committed(prepared.unit, steps)
        prepared.result.steps = steps
        return prepared.result

    def _on_its_own(self, unit: UnitOfWork, message: IncomingMessage, screen: TopicScreen, result: BatchResult) -> Entry | None:
        """A message decoded, keyed and screened on its own: by the fused step where it can vouch for the
        answer, else the general way, where a message that cannot be decoded or keyed is dead-lettered (None)."""
        if screen.fused is not None and (done := screen.fused(message.value, message.key)) is not None:
            return (message, *done)
        document = self._decode(unit, message, result)
        if document is None:
            return None
        pairs: list[tuple[ProcessDefinition, str | None]] = []
        try:
            for definition in screen.definitions:
                pairs.append((definition, correlation_key(definition, document, message.key)))
        except Exception as error:  # nothing is changed yet: dead-letter it on the spot
            self._dead_letter(unit, message, f"correlation key of {definition.id}: {error_text(error)}", result, definition.id)
            return None
        return (message, document, screen_all(document, pairs), None)

    def _message(
        self, unit: UnitOfWork, message: IncomingMessage, document: dict[str, Any],
        entries: list[Screened], result: BatchResult,
    ) -> None:
        for definition, key, screened in entries:
            try:
                if isinstance(screened, Exception):
                    raise screened
                active = None
                if screened is None:
                    found = match_windowed(unit, definition, document, message, key)
                else:
                    active = unit.active_by_key(definition.id, key) if key is not None else []
                    if not (screened or active or definition.trigger.holds):
                        continue  # most telemetry: nothing to start, refresh or hold
                    found = match_screened(definition, document, key, screened)
            except Exception as error:  # nothing is changed yet: dead-letter it on the spot
                reason = str(error) if isinstance(error, ExpressionError) else error_text(error)
                self._dead_letter(unit, message, f"trigger of {definition.id}: {reason}", result, definition.id)
                continue
            try:
                self._trigger(unit, definition, message, document, found, result, active)
            except Exception as error:  # the unit may be half-changed, so the batch is redone without it
                raise PoisonedMessage(message, f"handling for {definition.id}: {error_text(error)}") from error
            if definition.windowed:  # counted in the window: a redelivery must not count again
                ledger_windowed(unit, message, definition.id)

    def _decode(self, unit: UnitOfWork, message: IncomingMessage, result: BatchResult) -> dict[str, Any] | None:
        document = decode_message(message.value, self.limits)
        if isinstance(document, Refused):
            self._dead_letter(unit, message, document, result)
            return None
        return document

    def _dead_letter(self, unit: UnitOfWork, message: IncomingMessage, reason: str, result: BatchResult, definition_id: str | None = None) -> None:
        value = message.value[:MAX_DEAD_LETTER_BYTES] if message.value is not None else None
        unit.dead_letters.append(DeadLetter(message.coordinate, reason, value, message.key, definition_id))
        result.dead_lettered += 1
        c = message.coordinate
        log.warning("dead-lettered message %s/%s@%s: %s", c.topic, c.partition, c.offset, reason, extra={"topic": c.topic, "partition": c.partition, "offset": c.offset, "definition_id": definition_id})

    def _trigger(
        self, unit: UnitOfWork, definition: ProcessDefinition, message: IncomingMessage, document: dict[str, Any],
        found: Match, result: BatchResult, active: list[InstanceState] | None = None,
    ) -> None:
        """Start, refresh, cancel or hold for one match; `active` is its key's active instances, if read already."""
        if active is None:
            active = unit.active_by_key(definition.id, found.correlation_key) if found.correlation_key is not None else []
        if not (found.matched or active or definition.trigger.holds):
            return  # most telemetry: nothing to start, refresh or hold
        cause = f"{message.coordinate.topic}:{message.coordinate.partition}:{message.coordinate.offset}"
        if definition.trigger.holds and all(is_queued(i) for i in active):
            self._held(unit, definition, message, document, found, cause, result)
            return
        decided = plan(definition, found, active)
        if message.traceparent is not None:
            linked = join_trace(message.traceparent, message.tracestate)
            for instance_id in decided.cancel + decided.refresh:
                unit.linked_traces[instance_id] = linked
        for instance_id in decided.cancel:
            instance = unit.load(instance_id)
            unit.apply(unit.definition_of(instance), instance, Cancel("restarted by a newer message"), cause)
        for instance_id in decided.refresh:
            instance = unit.load(instance_id)
            unit.apply(unit.definition_of(instance), instance, VariablesRefreshed(found.variables, found.missing, self.refresh_interval), cause)
            result.refreshed += 1
        if not (decided.start or decided.queue):
            return
        instance_id = self.new_id()
        trace = self._trace(message)
        start = Start(instance_id, found.variables, document, found.correlation_key, found.missing, trace)
        if decided.queue:
            self._queue(unit, definition, start, cause)
        else:
            unit.apply(definition, None, start, cause)
            result.started.append(instance_id)
        unit.ledger.append(LedgerEntry(message.coordinate, definition.id, instance_id))

    def _held(
        self, unit: UnitOfWork, definition: ProcessDefinition, message: IncomingMessage, document: dict[str, Any],
        found: Match, cause: str, result: BatchResult,
    ) -> None:
        """A message through the trigger's hold rules: no instance of its key is active."""
        outcome = unit.holds.message(definition, found, document, cause, unit.now)
        if outcome.start is None:
            if definition.trigger.count is not None and found.matched and outcome.state is not None:
                # A counted message is in the ledger, so a redelivery cannot count twice.
                unit.ledger.append(LedgerEntry(message.coordinate, definition.id, None))
            return
        start = outcome.start
        instance_id = self.new_id()
        trace = self._trace(message)  # the message that starts it
        state = unit.apply(definition, None, Start(instance_id, start.variables, start.document, found.correlation_key, start.missing, trace), start.cause)
        result.started.append(instance_id)
        if outcome.refresh and state.active:  # started from a hold complete before this message came
            unit.apply(definition, state, VariablesRefreshed(found.variables, found.missing), cause)
        unit.ledger.append(LedgerEntry(message.coordinate, definition.id, instance_id))

    def _trace(self, message: IncomingMessage) -> str | None:
        """The trace context an instance this message starts is given (its own, with tracing off)."""
        if self.trace_of is None:
            return join_trace(message.traceparent, message.tracestate)
        return self.trace_of(message)

    def _queue(self, unit: UnitOfWork, definition: ProcessDefinition, start: Start, cause: str) -> None:
        """Create the instance now (so the message is not lost) and start it when its turn comes."""
        instance = new_instance(definition, start, unit.now)
        note = RecordHistory(None, "queued", unit.now, {"variables": instance.variables}, "waiting for the active instance with the same key")
        unit.add_new(instance, [note], cause)

    def _start_queued(self, unit: UnitOfWork) -> None:
        """When an instance with a key finished in this unit, start the next queued one."""
        for instance_id in list(unit.commands):
            instance = unit.instances[instance_id]
            if instance.correlation_key is None or instance.status == "running":
                continue
            definition = unit.definition_of(instance)
            if definition.trigger.mode != "queued":
                continue
            if not any(isinstance(c, (InstanceCompleted, InstanceFailed)) for c in unit.commands[instance_id]):
                continue
            active = unit.active_by_key(instance.definition_id, instance.correlation_key)
            waiting = [i for i in active if is_queued(i)]
            if waiting and len(waiting) == len(active):
                head = min(waiting, key=lambda i: (i.started_at, i.id))
                start = Start(head.id, head.variables, None, head.correlation_key, trace=head.trace)
                unit.apply(definition, head, start, f"queue:{instance.id}")
