"""A unit of work: instances touched by one batch, their accumulated commands, one commit."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.instance import InstanceState
from process_engine.engine import ActionFailed, ActionSucceeded, Fail, RunAction, advance
from process_engine.engine.commands import Command
from process_engine.engine.events import Event
from process_engine.ports import ActionClaimer, DeadLetter, InstanceStore, LedgerEntry, Step
from process_engine.runtime.holds import UnitHolds
from process_engine.runtime.registry import DefinitionRegistry

# An inline action runs inside the step (no outbox round trip): it must be local and cheap.
InlineAction = Callable[[RunAction, InstanceState], Any]

log = logging.getLogger("process_engine.dispatcher")
MAX_KNOWN_COPIES = 10_000  # unchanged instances kept from one batch to the next (a few MB at most)


class UnitOfWork:
    """Collects steps for many instances; several events on one instance merge into one step.

    `after` is a unit whose commit is still in flight: this one reads the instances
    it touched as they will be once it has committed, not as the store has them
    now, so the work of one batch can overlap the commit of the one before.
    """

    def __init__(
        self,
        store: InstanceStore,
        registry: DefinitionRegistry,
        now: datetime,
        inline_actions: Mapping[str, InlineAction],
        after: UnitOfWork | None = None,
        claimer: ActionClaimer | None = None,
    ):
        self.store = store
        self.claimer = claimer  # takes the outbox rows this unit writes at commit (the outbox worker)
        self.registry = registry
        self.now = now
        self.inline_actions = inline_actions
        self.instances: dict[str, InstanceState] = {}
        self.expected: dict[str, int | None] = {}
        self.commands: dict[str, list[Command]] = {}
        self.causes: dict[str, str] = {}
        self.linked_traces: dict[str, str] = {}  # instance id -> a message's own trace context (Step.linked_trace)
        self.consumed_timers: dict[str, str] = {}
        self.consumed_actions: dict[str, str] = {}
        self.ledger: list[LedgerEntry] = []
        self.dead_letters: list[DeadLetter] = []
        self.created: dict[tuple[str, str], list[str]] = {}  # (definition, key) -> new ids
        self.changed: set[str] = set()
        # The store's active instances per (definition, key), asked once per unit of work.
        self.stored_active: dict[tuple[str, str], list[InstanceState]] = {}
        # What `after` will have written: instance id -> (state, version), and ids per key.
        self._prepared: tuple[list[Step], Any] | None = None
        self.carried: dict[str, tuple[InstanceState, int]] = {}
        self.carried_keys: dict[tuple[str, str], list[str]] = {}
        # Copies of instances the units before read and left unchanged, with the version
        # they were read at: `read_active` reads back only those whose version moved on.
        self.known: dict[str, tuple[InstanceState, int]] = {}
        self._known_next: dict[str, tuple[InstanceState, int]] = {}
        # Trigger holds, counts and cooldowns per (definition, key), written with the commit.
        self.holds = UnitHolds(store, registry, after.holds if after is not None else None)
        if after is not None:
            self._carry(after)

    def _carry(self, after: UnitOfWork) -> None:
        self.known = after._known_next if after._prepared is not None else after._unchanged_copies()
        for step in after._prepared[0] if after._prepared is not None else after.steps():
            instance = step.instance
            self.carried[instance.id] = _as_committed(step)
            # Only active ones can answer active_by_key: a topic key would list them all.
            if instance.correlation_key is not None and instance.active:
                self.carried_keys.setdefault((instance.definition_id, instance.correlation_key), []).append(instance.id)

    def load(self, instance_id: str) -> InstanceState | None:
        """The instance as this unit of work sees it."""
        if instance_id not in self.instances:
            if instance_id in self.carried:
                return self._adopt_carried(instance_id)
            stored = self.store.load(instance_id)
            if stored is None:
                return None
            self.instances[instance_id] = stored
            self.expected[instance_id] = stored.version
        return self.instances[instance_id]

    def prefetch(self, instance_ids: Iterable[str]) -> None:
        """Load many instances in one query, for `load` to answer from."""
        wanted = [i for i in instance_ids if i not in self.instances and i not in self.carried]
        if wanted:
            for stored in self.store.load_many(wanted).values():
                self._adopt(stored)

    def prefetch_active(self, keys: Iterable[tuple[str, str]]) -> None:
        """Ask the store about many (definition, key) pairs in one query, for active_by_key."""
        wanted = self.active_unknown(keys)
        if wanted:
            self.adopt_active(wanted, self.store.active_by_keys(sorted(wanted)))

    def active_unknown(self, keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs whose active instances this unit has not read yet."""
        known = self.stored_active
        unique = keys if isinstance(keys, (set, frozenset)) else set(keys)
        return [key for key in unique if key not in known] if known else list(unique)  # a fresh unit knows none

    def read_active(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[InstanceState]]:
        """`store.active_by_keys(keys)`, reading back in full only the instances this unit has no current copy of.

        Safe on another thread while this one works on the batch: it only reads `known` and `carried`.
        """
        if not self.known:
            return self.store.active_by_keys(keys)
        versions = self.store.active_versions_by_keys(keys)
        known, carried = self.known, self.carried

        def current(instance_id: str, version: int) -> InstanceState | None:
            """The copy to use without reading the row back, if there is one."""
            if instance_id in carried:  # the store may not have the previous unit's write yet
                return carried[instance_id][0]
            copy = known.get(instance_id)
            return copy[0] if copy is not None and copy[1] == version else None

        stale = [i for entries in versions.values() for i, version in entries if current(i, version) is None]
        loaded = self.store.load_many(stale) if stale else {}
        found: dict[tuple[str, str], list[InstanceState]] = {}
        for pair, entries in versions.items():
            # A stale instance gone by the time it was loaded is left out, as the store would.
            states = [state for i, version in entries if (state := current(i, version) or loaded.get(i)) is not None]
            if states:
                found[pair] = states
        return found

    def _unchanged_copies(self) -> dict[str, tuple[InstanceState, int]]:
        """The instances this unit read and did not change, for the unit after it (and older copies, within bounds)."""
        kept = {}
        for instance_id, state in self.instances.items():
            if not self._touched(instance_id):
                version = self.expected[instance_id]
                # A copy carried from a write holds the version it was read at: the store's is one on.
                kept[instance_id] = (state if state.version == version else replace(state, version=version), version)
        if len(kept) + len(self.known) <= MAX_KNOWN_COPIES:
            for instance_id, entry in self.known.items():
                if instance_id not in self.instances:
                    kept[instance_id] = entry
        return kept

    def adopt_active(self, wanted: Iterable[tuple[str, str]], found: Mapping[tuple[str, str], list[InstanceState]]) -> None:
        """What `store.active_by_keys(wanted)` answered (asked by whoever holds the unit), for active_by_key."""
        for key in wanted:
            self.stored_active[key] = found.get(key, [])

    def active_by_key(self, definition_id: str, key: str) -> list[InstanceState]:
        """Active instances with this key, including ones created in this unit of work."""
        pair = (definition_id, key)
        if pair not in self.stored_active:
            self.stored_active[pair] = self.store.active_by_key(definition_id, key)
        elif not self.stored_active[pair] and pair not in self.carried_keys and pair not in self.created:
            return []  # most telemetry: a key no instance is active for
        found = {stored.id: self._adopt(stored) for stored in self.stored_active[pair]}
        for instance_id in self.carried_keys.get(pair, ()):
            found[instance_id] = self._adopt_carried(instance_id)
        if pair in self.created:
            # A finished instance never becomes active again here: drop it, so a batch of
            # instances sharing a key (the topic key) does not rescan all of them each time.
            self.created[pair] = [i for i in self.created[pair] if self.instances[i].active]
            for instance_id in self.created[pair]:
                found[instance_id] = self.instances[instance_id]
        return [i for i in found.values() if i.active]

    def _adopt(self, stored: InstanceState) -> InstanceState:
        """The unit's version of an instance just read from the store (saves loading it again)."""
        if stored.id not in self.instances:
            if stored.id in self.carried:  # the store may not have the previous unit's write yet
                return self._adopt_carried(stored.id)
            self.instances[stored.id] = stored
            self.expected[stored.id] = stored.version
        return self.instances[stored.id]

    def adopt_copy(self, instance: InstanceState, version: int) -> None:
        """Work on a copy of an instance as a commit left it at `version`, instead of reading it (stale: the commit conflicts)."""
        if instance.id not in self.instances and instance.id not in self.carried:
            self.instances[instance.id] = instance
            self.expected[instance.id] = version

    def _adopt_carried(self, instance_id: str) -> InstanceState:
        if instance_id not in self.instances:
            self.instances[instance_id], self.expected[instance_id] = self.carried[instance_id]
        return self.instances[instance_id]

    def add_new(self, instance: InstanceState, commands: list[Command], cause: str) -> None:
        """Track an instance created here (a queued start)."""
        self.instances[instance.id] = instance
        self.expected[instance.id] = None
        self.commands[instance.id] = list(commands)
        self.causes.setdefault(instance.id, cause)
        if instance.correlation_key is not None:
            self.created.setdefault((instance.definition_id, instance.correlation_key), []).append(instance.id)

    def definition_of(self, instance: InstanceState) -> ProcessDefinition:
        """The definition version the instance runs on."""
        return self.registry.get(instance.definition_id, instance.definition_version)

    def apply(self, definition: ProcessDefinition, instance: InstanceState | None, event: Event, cause: str) -> InstanceState:
        """Advance one instance by one event, running inline actions straight away.

        All or nothing: when the walker raises, the unit is left as it was.
        """
        state, commands = advance(definition, instance, event, self.now)
        pending: list[Command] = []
        state = self._run_inline(definition, state, commands, pending)
        if instance is None:
            self.add_new(state, pending, cause)
        else:
            self.causes.setdefault(state.id, cause)
            self.commands.setdefault(state.id, []).extend(pending)
        if state != instance:
            self.changed.add(state.id)
            if not state.active and (instance is None or instance.active):
                self.holds.instance_ended(state, self.now)
        self.instances[state.id] = state
        return state

    def apply_or_fail(self, definition: ProcessDefinition, instance: InstanceState, event: Event, cause: str) -> InstanceState:
        """`apply`; but when the walker raises on the event, the instance fails with the reason.

        For events the engine cannot refuse the way it dead-letters a message (a timer,
        an action outcome): an instance whose step raises would otherwise be retried forever.
        """
        try:
            return self.apply(definition, instance, event, cause)
        except Exception as error:
            reason = f"{type(event).__name__} could not be applied: {type(error).__name__}: {error}"
            log.error("instance %s failed: %s", instance.id, reason, extra={"instance_id": instance.id, "definition_id": instance.definition_id})
            return self.apply(definition, instance, Fail(reason), cause)

    def _run_inline(self, definition: ProcessDefinition, state: InstanceState, commands: list[Command], pending: list[Command]) -> InstanceState:
        queue = list(commands)
        while queue:
            command = queue.pop(0)
            runner = self.inline_actions.get(command.action) if isinstance(command, RunAction) else None
            if runner is None:
                pending.append(command)
                continue
            try:
                outcome: Event = ActionSucceeded(command.token_id, command.attempt, runner(command, state))
            except Exception as error:  # an inline action failing is an action failure, not a crash
                outcome = ActionFailed(command.token_id, command.attempt, f"{type(error).__name__}: {error}")
            state, more = advance(definition, state, outcome, self.now)
            queue = more + queue
        return state

    def steps(self) -> list[Step]:
        """One step per touched instance."""
        return [
            Step(
                instance=instance,
                expected_version=self.expected.get(instance_id),
                commands=tuple(self.commands.get(instance_id, ())),
                correlation_id=instance_id,
                causation_id=self.causes.get(instance_id),
                consumed_timer=self.consumed_timers.get(instance_id),
                consumed_action=self.consumed_actions.get(instance_id),
                linked_trace=self.linked_traces.get(instance_id),
            )
            for instance_id, instance in self.instances.items()
            if self._touched(instance_id)
        ]

    def _touched(self, instance_id: str) -> bool:
        return (
            self.expected.get(instance_id) is None
            or instance_id in self.changed
            or instance_id in self.consumed_timers
            or instance_id in self.consumed_actions
        )

    def prepare(self) -> None:
        """Check and shape the commit now (CPU only), so `commit` is left with the IO.

        Reading ends here: what was carried from the unit before is let go.

        Raises:
            StoreError: a value the store cannot hold; nothing was written.
        """
        self.holds.settle()  # cooldowns of instances that ended here: reads first
        self._known_next = self._unchanged_copies()
        self.carried, self.carried_keys, self.known = {}, {}, {}
        steps = self.steps()
        holds = self.holds.writes(self.now)
        self._prepared = (steps, self.store.prepare_commit(steps, self.ledger, self.dead_letters, holds))

    def writes_nothing(self) -> bool:
        """Whether the commit has nothing to write (most batches of telemetry), once prepared."""
        return self._prepared is not None and not (self._prepared[0] or self.ledger or self.dead_letters or self.holds.written)

    def commit(self) -> list[Step]:
        """Write everything in one transaction (preparing it first if need be); returns the steps written."""
        if self._prepared is None:
            self.prepare()
        assert self._prepared is not None
        steps, prepared = self._prepared
        if not self.writes_nothing():
            keys = list(dict.fromkeys(c.idempotency_key for step in steps for c in step.commands if isinstance(c, RunAction)))
            claimer = self.claimer if keys else None
            if claimer is None:
                self.store.commit_prepared(prepared)
                return steps
            # Leased in the commit's own transaction and started when it returns: a claim
            # round trip after the commit was most of a reaction's time past the commit.
            claim = claimer.reserve(keys)
            try:
                leased = self.store.commit_prepared(prepared, claim)
            except BaseException:
                claimer.claimed(claim, (), 0)  # nothing was written: the slots are free again
                raise
            if leased:
                after = {step.instance.id: _as_committed(step) for step in steps}
                per_instance = Counter(action.instance_id for action in leased)
                # Two rows of one instance (parallel branches): the first outcome makes the other's copy stale.
                leased = [replace(action, known=after.get(action.instance_id) if per_instance[action.instance_id] == 1 else None)
                          for action in leased]
            claimer.claimed(claim, leased, len(keys) - len(leased))
        return steps


def _as_committed(step: Step) -> tuple[InstanceState, int]:
    """A step's instance and the version its commit gives it (one step per instance per unit)."""
    return step.instance, (step.expected_version or 0) + 1
