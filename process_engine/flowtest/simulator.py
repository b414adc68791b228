"""Simulated time around the live pipeline: the Dispatcher on the in-memory store.

Flow tests and replay both drive exactly the code the service runs (trigger
matching, correlation modes, refresh, the walker, the commit plan); only the clock
is moved by hand, timers are fired from the store as time passes, and actions are
answered by a stub instead of being delivered.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.errors import DefinitionError, ProcessEngineError
from process_engine.domain.instance import InstanceState
from process_engine.engine import ActionFailed, ActionSucceeded, Cancel, VariablesRefreshed
from process_engine.engine.commands import RecordHistory, RunAction, ScheduleTimer
from process_engine.flowtest.spec import ActionStub, Arrival, FlowTest
from process_engine.ports import IncomingMessage, MessageCoordinate, PendingAction, Step
from process_engine.runtime.dispatcher import BatchResult, Dispatcher
from process_engine.runtime.registry import DefinitionRegistry

# Events that put an activity on an instance's path (see the spec docstring).
PATH_EVENTS = frozenset({"completed", "timeout", "error_path", "failed"})
IDLE_LIMIT = timedelta(days=30)
CLAIM_LIMIT = 100
LEASE_SECONDS = 60.0
# A definition that loops through timers or actions for ever must not hang a run; the
# limits count per stretch of simulated time, so a long recording is not cut short.
MAX_TIMER_FIRINGS = 10_000
MAX_ACTIONS = 10_000

Answer = Callable[[PendingAction], ActionSucceeded | ActionFailed]


class SimulationError(ProcessEngineError):
    """The simulation cannot go on as the test asks (a runaway loop, an unknown instance)."""

    def __init__(self, reason: str, line: int | None = None):
        self.line = line
        super().__init__(reason)


@dataclass
class ObservedAction:
    """An action the engine requested, and how the stub answered it."""

    instance_id: str
    activity: str
    action: str
    config: Any
    attempt: int
    outcome: str = "pending"


@dataclass(frozen=True)
class ObservedTimer:
    """A timer the engine scheduled; `after` is its delay from when it was scheduled."""

    instance_id: str
    activity: str
    kind: str
    after: timedelta
    due_at: datetime


@dataclass(frozen=True)
class InstanceOutcome:
    """One instance as the simulation left it."""

    number: int
    id: str
    definition_id: str
    status: str
    current_activity: str | None
    variables: dict[str, Any]
    correlation_key: str | None
    started_at: datetime | None
    path: tuple[str, ...]
    error: str | None


@dataclass
class Outcome:
    """What a simulation did: instances in start order, every action and timer."""

    instances: list[InstanceOutcome] = field(default_factory=list)
    actions: list[ObservedAction] = field(default_factory=list)
    timers: list[ObservedTimer] = field(default_factory=list)
    dead_letters: int = 0

    def number_of(self, instance_id: str) -> int:
        """The 1-based start-order number of an instance."""
        return next(i.number for i in self.instances if i.id == instance_id)


class SimulatedClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def succeed_all(action: PendingAction) -> ActionSucceeded:
    """Every action succeeds at once (replay: actions are not executed)."""
    return ActionSucceeded(action.token_id, action.attempt)


def sequential_ids() -> Callable[[], str]:
    """Readable, deterministic instance ids: ...-000000000001, ...-000000000002."""
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


class Simulator:
    """The live pipeline's dispatcher on the in-memory store, with a clock the caller moves."""

    def __init__(self, definitions: Iterable[ProcessDefinition], start: datetime, answer: Answer = succeed_all):
        self.clock = SimulatedClock(start)
        self.store = MemoryInstanceStore(clock=self.clock)
        self.registry = DefinitionRegistry(self.store)
        self.registry.activate(definitions)
        self.dispatcher = Dispatcher(self.store, self.registry, clock=self.clock, new_id=sequential_ids(), on_steps=self._observe)
        self.answer = answer
        self.records: dict[str, list[RecordHistory]] = {}  # by instance, in start order
        self.actions: dict[str, ObservedAction] = {}  # by idempotency key, in request order
        self.timers: list[ObservedTimer] = []
        self.dead_letters = 0
        self._offsets = itertools.count()

    @property
    def now(self) -> datetime:
        """The simulated time."""
        return self.clock.now

    def deliver(
        self, topic: str, value: bytes | None, at: datetime, partition: int = 0, offset: int | None = None, key: bytes | None = None
    ) -> BatchResult:
        """Let time pass until `at`, then hand one message to the dispatcher as the consumer would."""
        self.advance_to(at)
        coordinate = MessageCoordinate(topic, partition, next(self._offsets) if offset is None else offset)
        timestamp_ms = int(self.now.timestamp() * 1000)
        result = self.dispatcher.handle_batch([IncomingMessage(coordinate, value, key, timestamp_ms)])
        self.dead_letters += result.dead_lettered
        self._settle()
        return result

    def start(self, definition_id: str, variables: Mapping[str, Any], at: datetime) -> InstanceState:
        """Start an instance by hand at `at`, as the API does."""
        self.advance_to(at)
        started = self.dispatcher.start(definition_id, variables, cause="flowtest")
        self._settle()
        return started

    def refresh(self, variables: Mapping[str, Any], at: datetime, number: int | None = None) -> None:
        """Refresh variables of the running instances (or of instance `number`) at `at`."""
        self.advance_to(at)
        ids = list(self.records)
        if number is not None and number > len(ids):
            raise SimulationError(f"refresh of instance {number}: only {len(ids)} instance(s) started so far")
        targets = [ids[number - 1]] if number is not None else ids
        for instance_id in targets:
            instance = self.store.load(instance_id)
            if instance is not None and instance.active:
                self.dispatcher.control(instance_id, VariablesRefreshed(dict(variables)), cause="flowtest")
        self._settle()

    def cancel(self, number: int, at: datetime) -> None:
        """Cancel instance `number` (1-based, in start order) at `at`, as the API does."""
        self.advance_to(at)
        ids = list(self.records)
        if number > len(ids):
            raise SimulationError(f"cancel of instance {number}: only {len(ids)} instance(s) started so far")
        self.dispatcher.control(ids[number - 1], Cancel("cancelled by the flow test"), cause="flowtest")
        self._settle()

    def advance_to(self, until: datetime) -> None:
        """Move the clock to `until`, firing every timer that comes due on the way."""
        self._fire_due(until)
        self.clock.now = max(self.clock.now, until)

    def run_until_idle(self, limit: datetime) -> None:
        """Fire timers until none is left or the next one is due after `limit`."""
        self._fire_due(limit)

    def _fire_due(self, until: datetime) -> None:
        self._settle()
        fired = 0
        while (due := self._next_due()) is not None and due <= until:
            self.clock.now = max(self.clock.now, due)
            timers = self.store.claim_due_timers(self.now, CLAIM_LIMIT, LEASE_SECONDS)
            fired += len(timers)
            if fired > MAX_TIMER_FIRINGS:
                raise SimulationError(f"more than {MAX_TIMER_FIRINGS} timers fired in a row by {self.now.isoformat()}: a timer loop? (a flow test can bound it with run_for)")
            if timers:
                self.dispatcher.fire_timers(timers)
            # Trigger holds (`for:`) complete as simulated time passes, as the live sweep completes them.
            if holds := self.store.claim_due_holds(self.now, CLAIM_LIMIT, LEASE_SECONDS):
                fired += len(holds)
                self.dispatcher.fire_holds(holds)
            self._settle()

    def _next_due(self) -> datetime | None:
        """The earliest time a timer or a trigger hold comes due."""
        due = [t for t in (self.store.next_timer_due(), self.store.next_hold_due()) if t is not None]
        return min(due, default=None)

    def _settle(self) -> None:
        """Answer every action in the outbox (answers may request more: retries, next activities)."""
        answered = 0
        while pending := self.store.claim_actions(self.now, CLAIM_LIMIT, LEASE_SECONDS):
            for action in pending:
                outcome = self.answer(action)
                observed = self.actions.get(action.idempotency_key)
                if observed is not None:
                    observed.outcome = "succeeded" if isinstance(outcome, ActionSucceeded) else "failed"
                self.dispatcher.action_finished(action, outcome)
            answered += len(pending)
            if answered > MAX_ACTIONS:
                raise SimulationError(f"more than {MAX_ACTIONS} actions at {self.now.isoformat()} with no time passing: a loop without a timer?")

    def _observe(self, steps: list[Step]) -> None:
        """See every committed step, as the outbox and the history table would."""
        for step in steps:
            instance_id = step.instance.id
            records = self.records.setdefault(instance_id, [])
            for command in step.commands:
                if isinstance(command, RecordHistory):
                    records.append(command)
                elif isinstance(command, RunAction):
                    self.actions[command.idempotency_key] = ObservedAction(
                        instance_id, command.activity_id, command.action, command.config, command.attempt
                    )
                elif isinstance(command, ScheduleTimer):
                    after = command.due_at - self.now
                    self.timers.append(ObservedTimer(instance_id, command.activity_id, command.kind, after, command.due_at))

    def outcome(self) -> Outcome:
        """Where every instance stands now."""
        instances = []
        for number, instance_id in enumerate(self.records, start=1):
            state = self.store.load(instance_id)
            if state is not None:
                instances.append(self._instance_outcome(number, state))
        return Outcome(instances, list(self.actions.values()), list(self.timers), self.dead_letters)

    def _instance_outcome(self, number: int, state: InstanceState) -> InstanceOutcome:
        path = tuple(r.activity_id for r in self.records[state.id] if r.event_type in PATH_EVENTS and r.activity_id)
        return InstanceOutcome(
            number=number,
            id=state.id,
            definition_id=state.definition_id,
            status=state.status,
            current_activity=state.current_activity if state.active else None,
            variables=dict(state.variables),
            correlation_key=state.correlation_key,
            started_at=state.started_at,
            path=path,
            error=state.error,
        )


# -- flow test cases ------------------------------------------------------------
def stub_answer(stubs: Mapping[str, ActionStub]) -> Answer:
    """Answer actions from a test's stubs, by activity id first, then by action name."""

    def answer(action: PendingAction) -> ActionSucceeded | ActionFailed:
        stub = stubs.get(action.activity_id) or stubs.get(action.action) or ActionStub()
        if stub.fails(action.attempt):
            return ActionFailed(action.token_id, action.attempt, stub.error)
        return ActionSucceeded(action.token_id, action.attempt, stub.result)

    return answer


def problems(case: FlowTest, definition: ProcessDefinition, file: str) -> list[DefinitionError]:
    """What in a test case does not fit its definition (stubs naming nothing, no topic to send to)."""
    found = []
    actions = {a.action for a in definition.activities.values() if a.action}
    for name, stub in case.stubs.items():
        if name not in definition.activities and name not in actions:
            known = ", ".join(sorted(a.id for a in definition.activities.values() if a.type == "service"))
            found.append(DefinitionError(f"action stub '{name}' names no service activity or action of {definition.id} (service activities: {known})", file, stub.line))
    topic = definition.trigger.topic if definition.trigger.is_topic else None
    for arrival in case.arrivals:
        if arrival.kind == "message" and arrival.topic is None and topic is None:
            found.append(DefinitionError(f"{definition.id} has no trigger topic: give the message a 'topic', or use 'start'", file, arrival.line))
    return found


def run_case(case: FlowTest, definition: ProcessDefinition) -> Outcome:
    """Run one test case in simulated time and return what happened.

    Raises:
        SimulationError: a runaway loop, or a refresh of an instance that never started.
    """
    simulator = Simulator([definition], case.start_at, stub_answer(case.stubs))
    last = case.start_at
    for arrival in case.arrivals:
        last = case.start_at + arrival.at
        _arrive(simulator, definition, arrival, last)
    if case.run_for is not None:
        simulator.advance_to(last + case.run_for)
    else:
        simulator.run_until_idle(last + IDLE_LIMIT)
    return simulator.outcome()


def _arrive(simulator: Simulator, definition: ProcessDefinition, arrival: Arrival, at: datetime) -> None:
    if arrival.kind == "start":
        simulator.start(definition.id, arrival.variables, at)
    elif arrival.kind in ("refresh", "cancel"):
        try:
            if arrival.kind == "refresh":
                simulator.refresh(arrival.variables, at, arrival.instance)
            else:
                simulator.cancel(arrival.instance, at)
        except SimulationError as error:
            raise SimulationError(str(error), arrival.line) from None
    else:
        topic = arrival.topic or definition.trigger.topic or ""
        simulator.deliver(topic, encode_value(arrival.value), at, arrival.partition, key=arrival.key.encode() if arrival.key else None)


def encode_value(value: Any) -> bytes | None:
    """A message value as bytes on the wire: text as is, anything else as JSON, null as no value."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, default=str).encode("utf-8")
