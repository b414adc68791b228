"""The trigger states (holds, counts, cooldowns) one unit of work reads and changes.

Read once per batch for every key its messages touch, changed by the pure rules of
engine/holds.py, and written with the batch's commit, each write guarded by the
version it was read at. `after` is a unit whose commit is still in flight: this one
starts from the states as that one leaves them, as UnitOfWork does for instances.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.instance import InstanceState
from process_engine.domain.trigger_state import TriggerState
from process_engine.engine.holds import DROPPED, SUPPRESSED, HoldEvent, Outcome, Reading, fresh, on_due, on_end, on_message
from process_engine.engine.triggers import Match
from process_engine.ports import HoldWrite, InstanceStore
from process_engine.runtime.registry import DefinitionRegistry

log = logging.getLogger("process_engine.holds")
Key = tuple[str, str]


class UnitHolds:
    """Trigger states as one unit of work sees them, and the events its rules produced."""

    def __init__(self, store: InstanceStore, registry: DefinitionRegistry, after: UnitHolds | None = None):
        self.store = store
        self.registry = registry
        self.states: dict[Key, TriggerState | None] = {}
        self.read_versions: dict[Key, int] = {}
        self.changed: set[Key] = set()
        self.events: list[HoldEvent] = []
        self.written: list[HoldWrite] = []
        self.endings: dict[Key, datetime] = {}  # keys whose instance ended here, cooldown not yet applied
        # What `after` will have written: key -> state with its new version (None: not stored).
        self.carried: dict[Key, TriggerState | None] = {}
        for write in after.written if after is not None else ():
            key = (write.definition_id, write.correlation_key)
            self.carried[key] = None if write.state is None else _versioned(write.state, write.expected_version + 1)

    def prefetch(self, keys: Iterable[Key]) -> None:
        """Read the states of many keys of definitions with hold rules, in one query."""
        ruled = {d for d in {key[0] for key in keys} if _has_rules(self.registry.current(d))}  # once per definition
        wanted = [key for key in keys if key[0] in ruled and key not in self.states]
        for key in [k for k in wanted if k in self.carried]:
            self._adopt(key, self.carried[key])
        wanted = [key for key in wanted if key not in self.carried]
        if wanted:
            found = self.store.load_trigger_states(sorted(set(wanted)))
            for key in wanted:
                self._adopt(key, found.get(key))

    def _adopt(self, key: Key, state: TriggerState | None) -> None:
        self.states[key] = state
        self.read_versions[key] = state.version if state is not None else 0

    def state(self, definition: ProcessDefinition, key: str) -> TriggerState:
        """The key's state under the active trigger (a stale one loses its hold); empty when none."""
        pair = (definition.id, key)
        if pair not in self.states:
            self.prefetch([pair])
        stored = self.states.get(pair)
        current, dropped = fresh(definition.trigger, stored, definition.version)
        if dropped:
            log.info("dropped the pending hold of %s for key %r: the trigger changed", definition.id, key, extra={"definition_id": definition.id, "correlation_key": key})
            self._put(pair, current)
            self.events.extend(dropped)
        current = current or TriggerState(definition.id, key, definition.trigger.config_hash, definition.version)
        ended = self.endings.pop(pair, None)
        if ended is not None:
            current = on_end(definition.trigger, current, ended)
            self._put(pair, current)
        return current

    def message(self, definition: ProcessDefinition, found: Match, document: Any, cause: str, now: datetime) -> Outcome:
        """Apply the hold rules to one message of a key with no active instance."""
        if found.correlation_key is None:  # rules are kept per key; without one nothing can be held
            event = HoldEvent(definition.id, SUPPRESSED, "no_key")
            self.events.append(event)
            return Outcome(None, events=(event,))
        state = self.state(definition, found.correlation_key)
        reading = Reading(found.matched, found.variables, document, found.missing, cause)
        outcome = on_message(definition.trigger, state, reading, now)
        self._record(state, outcome)
        return outcome

    def due(self, definition: ProcessDefinition | None, key: Key, now: datetime) -> Outcome:
        """A claimed hold, read again: start it when its time is up and it is still open."""
        stored = self.states.get(key)
        if stored is None:
            return Outcome(None)  # a message dropped it, or another replica completed it
        if definition is None:
            log.info("dropped the pending hold of %s for key %r: the definition is no longer active", key[0], key[1], extra={"definition_id": key[0], "correlation_key": key[1]})
            self._put(key, stored.without_hold())
            self.events.append(HoldEvent(key[0], DROPPED, "definition_removed"))
            return Outcome(None)
        if stored.definition_version > definition.version:
            return Outcome(stored)  # kept under a version this replica has not loaded yet: left to one that has
        state = self.state(definition, key[1])
        outcome = on_due(state, now)
        self._record(state, outcome)
        return outcome

    def drop(self, definition: ProcessDefinition, key: str, reason: str) -> None:
        """Close the key's hold without starting (an instance of the key is active already)."""
        state = self.state(definition, key)
        if state.holding:
            self._put(state.key, state.without_hold())
            self.events.append(HoldEvent(definition.id, DROPPED, reason))

    def keep_windows(self, state: TriggerState, windows: dict[str, Any] | None) -> None:
        """The key's new window state (engine/windows.py), written with the commit."""
        if windows != state.windows:
            self._put(state.key, replace(state, windows=windows))

    def _record(self, before: TriggerState, outcome: Outcome) -> None:
        if outcome.state is not None and outcome.state != before:
            self._put(before.key, outcome.state)
        self.events.extend(outcome.events)

    def _put(self, key: Key, state: TriggerState | None) -> None:
        if key not in self.read_versions:
            self.read_versions[key] = 0
        self.states[key] = state
        self.changed.add(key)

    def instance_ended(self, instance: InstanceState, at: datetime) -> None:
        """An instance of a key ended in this unit (completed, failed, cancelled): its cooldown starts.

        Applied when the key's state is next read here, or at the commit, so a message
        later in the same batch already meets the cooldown.
        """
        definition = self.registry.current(instance.definition_id)
        if instance.correlation_key is None or definition is None or definition.trigger.cooldown is None:
            return
        self.endings[(definition.id, instance.correlation_key)] = at

    def settle(self) -> None:
        """Apply the endings not met yet (one read for all their keys); before `writes`."""
        if self.endings:
            self.prefetch(self.endings)
            for key in list(self.endings):
                definition = self.registry.current(key[0])
                if definition is not None:
                    self.state(definition, key[1])
            self.endings.clear()

    def writes(self, now: datetime) -> list[HoldWrite]:
        """The changed states to commit; an emptied one is deleted. Kept for a unit that builds on this one."""
        self.written = []
        for key in sorted(self.changed):
            state = self.states.get(key)
            kept = state if state is not None and not state.is_empty(now) else None
            self.written.append(HoldWrite(key[0], key[1], kept, self.read_versions[key]))
        return self.written


def _has_rules(definition: ProcessDefinition | None) -> bool:
    return definition is not None and (definition.trigger.holds or definition.windowed)


def _versioned(state: TriggerState, version: int) -> TriggerState:
    return replace(state, version=version)
