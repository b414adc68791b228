"""The dispatcher: messages, timers, action outcomes and API calls in; committed steps out.

The message half lives in `messages.py`; this module adds timers, action outcomes and
the calls of the API and the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from process_engine.domain.errors import ConcurrencyConflict, StoreError, StoreUnavailable
from process_engine.domain.instance import InstanceState
from process_engine.domain.trigger_state import TriggerState
from process_engine.engine import ActionFailed, ActionSucceeded, Start, TimerFired
from process_engine.engine.events import Event
from process_engine.engine.triggers import is_queued
from process_engine.ports import (
    DueTimer,
    LedgerEntry,
    MessageCoordinate,
    PendingAction,
    Step,
)
from process_engine.runtime.messages import (
    SCHEDULE_TOPIC,
    BatchResult,
    MessageDispatcher,
    PreparedBatch,
    utc_now,
)
from process_engine.runtime.unit_of_work import UnitOfWork

log = logging.getLogger("process_engine.dispatcher")


class Dispatcher(MessageDispatcher):
    """Applies events to instances through the walker and commits each batch atomically.

    Thread-safe by construction: it keeps no state between calls; concurrent writers
    meet in the store's optimistic concurrency and are retried here.
    """

    def fire_timers(self, timers: Sequence[DueTimer]) -> list[Step]:
        """Fire claimed timers; each one is used up exactly once (a timer already used is skipped).

        A timer whose step the store refuses (a variable JSON cannot hold) stays
        claimed and is retried when its lease ends; it never holds up the others.

        Raises:
            StoreUnavailable: the database is down; the timers fire after their lease.
        """

        def work(unit: UnitOfWork) -> None:
            unit.prefetch(timer.instance_id for timer in timers)  # one query, not one per timer
            for timer in timers:
                self._fire(unit, timer)
            self._start_queued(unit)  # once: it looks at every instance of the unit

        try:
            return self._run(work)[1]
        except StoreUnavailable:
            raise
        except StoreError as error:
            if len(timers) == 1:
                self._not_fired(timers[0], error)
                return []
        steps: list[Step] = []
        for timer in timers:  # isolate the timer that conflicts or cannot be stored
            steps.extend(self.fire_timers([timer]))
        return steps

    def _not_fired(self, timer: DueTimer, error: StoreError) -> None:
        context = {"instance_id": timer.instance_id, "activity_id": timer.activity_id}
        if isinstance(error, ConcurrencyConflict):
            log.info("timer %s was already fired elsewhere", timer.timer_id, extra=context)
        else:
            log.error("timer %s cannot be fired, retrying when its lease ends: %s", timer.timer_id, error, extra=context)

    def _fire(self, unit: UnitOfWork, timer: DueTimer) -> None:
        instance = unit.load(timer.instance_id)
        if instance is None:
            return
        unit.consumed_timers[instance.id] = timer.timer_id
        unit.apply_or_fail(unit.definition_of(instance), instance, TimerFired(timer.timer_id), f"timer:{timer.timer_id}")

    def fire_holds(self, claimed: Sequence[TriggerState]) -> list[str]:
        """Complete claimed `for` holds whose time is up; returns the ids of the instances started.

        Each hold is read again (a message may have changed it since the claim); its
        instance is started and the hold closed in one transaction guarded by the
        hold's version, so a message updating it and a replica completing it cannot
        both win. A hold that conflicts is left to the message that changed it.

        Raises:
            StoreUnavailable: the database is down; the holds are claimed again after their lease.
        """

        def work(unit: UnitOfWork) -> list[str]:
            keys = [state.key for state in claimed]
            unit.holds.prefetch(keys)
            unit.prefetch_active(keys)
            return [instance_id for key in keys if (instance_id := self._complete_hold(unit, key)) is not None]

        try:
            return self._run(work)[0]
        except StoreUnavailable:
            raise
        except StoreError as error:
            if len(claimed) == 1:
                log.info("hold of %s for key %r not completed here: %s", claimed[0].definition_id, claimed[0].correlation_key, error)
                return []
        return [instance_id for state in claimed for instance_id in self.fire_holds([state])]

    def _complete_hold(self, unit: UnitOfWork, key: tuple[str, str]) -> str | None:
        definition = self.registry.current(key[0])
        if definition is not None and not all(is_queued(i) for i in unit.active_by_key(*key)):
            unit.holds.drop(definition, key[1], "active_instance")  # started another way meanwhile
            return None
        outcome = unit.holds.due(definition, key, unit.now)
        if outcome.start is None or definition is None:
            return None
        start = outcome.start
        instance_id = self.new_id()
        unit.apply(definition, None, Start(instance_id, start.variables, start.document, key[1], start.missing), f"hold:{start.cause}")
        return instance_id

    def action_finished(self, action: PendingAction, outcome: ActionSucceeded | ActionFailed) -> list[Step]:
        """Feed an action's outcome back; the outbox row is used up in the same transaction.

        An outcome the store refuses (a result or error text with a NUL character) is
        recorded without the offending part: otherwise the row would be delivered
        again at every lease, the action running over and over.
        """

        adopt = _first_attempt_copies([action])

        def work(unit: UnitOfWork) -> None:
            adopt(unit)
            self._outcome(unit, action, outcome)
            self._start_queued(unit)

        try:
            try:
                return self._run(work)[1]
            except (StoreUnavailable, ConcurrencyConflict):
                raise
            except StoreError as error:
                log.warning("outcome of action %s cannot be stored as it is (%s); storing it without its detail", action.idempotency_key, error)
                outcome = _storable(outcome, error)
                return self._run(work)[1]
        except ConcurrencyConflict:
            log.info("outcome of action %s was already recorded", action.idempotency_key, extra={"instance_id": action.instance_id, "activity_id": action.activity_id, "idempotency_key": action.idempotency_key, "action": action.action})
            return []

    def actions_finished(self, finished: Sequence[tuple[PendingAction, ActionSucceeded | ActionFailed]]) -> list[Step]:
        """Feed many outcomes back in one transaction; on any trouble, one at a time.

        A step uses up one outbox row, so a second outcome for the same instance goes
        into the next transaction.

        Raises:
            StoreUnavailable: the database is down; the rows are delivered again after their lease.
        """
        if len(finished) <= 1:
            return [step for action, outcome in finished for step in self.action_finished(action, outcome)]
        now, later, instances = [], [], set()
        for action, outcome in finished:
            if action.instance_id in instances:  # after the first one's step, its copy is stale
                later.append((replace(action, known=None), outcome))
            else:
                now.append((action, outcome))
            instances.add(action.instance_id)

        adopt = _first_attempt_copies([action for action, _ in now])

        def work(unit: UnitOfWork) -> None:
            adopt(unit)
            unit.prefetch(action.instance_id for action, _ in now)
            for action, outcome in now:
                self._outcome(unit, action, outcome)
            self._start_queued(unit)

        try:
            steps = self._run(work)[1]
        except StoreUnavailable:
            raise
        except StoreError:  # a conflict or a refused outcome: isolate it
            steps = [step for action, outcome in now for step in self.action_finished(action, outcome)]
        return steps + self.actions_finished(later)

    def _outcome(self, unit: UnitOfWork, action: PendingAction, outcome: ActionSucceeded | ActionFailed) -> None:
        instance = unit.load(action.instance_id)
        if instance is None:
            return
        unit.consumed_actions[instance.id] = action.idempotency_key
        unit.apply_or_fail(unit.definition_of(instance), instance, outcome, f"action:{action.idempotency_key}")

    def control(self, instance_id: str, event: Event, cause: str = "api") -> InstanceState:
        """Apply a control event (cancel, suspend, resume, retry) or any event by hand.

        Raises:
            KeyError: no such instance.
        """

        def work(unit: UnitOfWork) -> InstanceState:
            instance = unit.load(instance_id)
            if instance is None:
                raise KeyError(instance_id)
            state = unit.apply(unit.definition_of(instance), instance, event, cause)
            self._start_queued(unit)
            return state

        return self._run(work)[0]

    def start(self, definition_id: str, variables: Mapping[str, Any], cause: str = "api") -> InstanceState:
        """Start an instance by hand (HTTP, CLI, schedule trigger).

        Raises:
            KeyError: no active definition with this id.
        """
        definition = self.registry.current(definition_id)
        if definition is None:
            raise KeyError(definition_id)
        instance_id = self.new_id()
        event = Start(instance_id, dict(variables), None, None)
        return self._run(lambda unit: unit.apply(definition, None, event, cause))[0]

    def start_scheduled(self, definition_id: str, tick: datetime) -> InstanceState | None:
        """Start the instance of one cron tick; None when another replica already did."""
        definition = self.registry.current(definition_id)
        if definition is None:
            raise KeyError(definition_id)
        coordinate = MessageCoordinate(SCHEDULE_TOPIC.format(definition_id), 0, int(tick.timestamp()))

        def work(unit: UnitOfWork) -> InstanceState | None:
            if self.store.seen_messages([coordinate]):
                return None
            event = Start(self.new_id(), {}, {"scheduled_at": tick.isoformat()}, None)
            unit.ledger.append(LedgerEntry(coordinate, definition_id, event.instance_id))
            return unit.apply(definition, None, event, f"schedule:{tick.isoformat()}")

        try:
            return self._run(work)[0]
        except ConcurrencyConflict:
            return None


def _first_attempt_copies(actions: Sequence[PendingAction]) -> Callable[[UnitOfWork], None]:
    """Has the first unit of work use the instance copies these actions were leased with; later
    attempts (after a conflict: the instance moved on) read them from the store."""
    copies = [action.known for action in actions if action.known is not None]

    def adopt(unit: UnitOfWork) -> None:
        for known in copies:
            unit.adopt_copy(*known)
        copies.clear()

    return adopt


def _storable(outcome: ActionSucceeded | ActionFailed, error: StoreError) -> ActionSucceeded | ActionFailed:
    """The outcome without what the store refused: the result gives way to a note, NULs are escaped."""
    if isinstance(outcome, ActionSucceeded):
        return replace(outcome, result=f"(result not stored: {error})".replace("\x00", "\\x00"))
    return replace(outcome, error=outcome.error.replace("\x00", "\\x00"))


__all__ = ["BatchResult", "Dispatcher", "PreparedBatch", "utc_now"]
