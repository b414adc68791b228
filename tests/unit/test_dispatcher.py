"""The dispatcher on the in-memory store: triggers, correlation modes, dead letters, timers, outcomes."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone

import pytest

from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.engine import ActionFailed, ActionSucceeded, Cancel
from process_engine.ports import IncomingMessage, InstanceQuery, MessageCoordinate
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry
from tests.unit.walking import definition_from, example

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(definitions, clock: Clock, inline=("log",)):
    store = MemoryInstanceStore(clock=clock)
    registry = DefinitionRegistry(store)
    registry.activate(definitions)
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
    logged = []
    actions = {name: (lambda command, instance: logged.append(command.config)) for name in inline}
    return store, Dispatcher(store, registry, clock=clock, new_id=lambda: next(ids), inline_actions=actions), logged


offsets = itertools.count()


def message(topic: str, value, partition: int = 0) -> IncomingMessage:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return IncomingMessage(MessageCoordinate(topic, partition, next(offsets)), raw)


def reading(temp: float, device: str = "hp-1") -> IncomingMessage:
    return message("heatpump-telemetry", {"tags": {"device_id": device}, "fields": {"flow_temp_c": temp}})


def test_a_hot_reading_starts_one_instance_and_a_cold_one_none(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml")], clock)
    assert dispatcher.handle_batch([reading(20.0)]).started == []
    result = dispatcher.handle_batch([reading(27.0)])
    assert len(result.started) == 1
    instance = store.load(result.started[0])
    assert instance.variables == {"device_id": "hp-1", "temperature": 27.0, "threshold": 25.0}
    assert instance.current_activity == "activate_cooling"
    [action] = store.claim_actions(clock.now, 10, 30)
    assert action.config["payload"] == {"device_id": "hp-1", "command": "activate_cooling"}


def test_without_correlate_the_topic_is_one_key_so_later_readings_refresh(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml")], clock)
    [instance_id] = dispatcher.handle_batch([reading(27.0)]).started
    assert dispatcher.handle_batch([reading(28.0), reading(22.0)]).started == []  # mode single
    instance = store.load(instance_id)
    assert instance.variables["temperature"] == 22.0 and instance.correlation_key == "*"


def test_a_redelivered_message_starts_nothing(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml")], clock)
    hot = reading(27.0)
    assert len(dispatcher.handle_batch([hot]).started) == 1
    again = dispatcher.handle_batch([hot])
    assert again.started == [] and again.duplicates == 1
    assert len(store.find_instances(InstanceQuery())) == 1


def test_bad_messages_are_dead_lettered_and_good_ones_after_them_processed(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml")], clock)
    bad = [message("heatpump-telemetry", b"{not json"), message("heatpump-telemetry", [1, 2]), message("heatpump-telemetry", {"fields": {"flow_temp_c": "hot"}})]
    result = dispatcher.handle_batch([*bad, reading(30.0)])
    assert result.dead_lettered == 3 and len(result.started) == 1
    reasons = [d.reason for d in store.dead_letters()]
    assert any(r.startswith("not JSON") for r in reasons)
    assert any("wrong shape" in r for r in reasons)
    assert any("trigger of temperature-control" in r for r in reasons)
    assert {d.coordinate.offset for d in store.dead_letters()} == {m.coordinate.offset for m in bad}


def test_an_inline_log_action_completes_within_the_step(clock: Clock) -> None:
    store, dispatcher, logged = make([example("temperature-control.yaml")], clock)
    instance = dispatcher.start("temperature-control", {"device_id": "hp-1", "temperature": 21.0})
    assert instance.status == "completed"
    assert logged[0]["message"].startswith("Temperature normal: 21.0")
    assert store.claim_actions(clock.now, 10, 30) == []


CORRELATED = """
id: watch
trigger: {type: kafka, topic: levels, condition: "fields.level > 10", correlate: tags.id, mode: MODE}
variables:
  - {name: level, source: fields.level}
activities:
  - {id: start, type: start}
  - {id: until_low, type: wait, condition: "${level} < 5", timeout: 1h}
  - {id: done, type: end}
"""


def level(value: float, key: str = "tank-1") -> IncomingMessage:
    return message("levels", {"tags": {"id": key}, "fields": {"level": value}})


def test_mode_single_keeps_one_instance_per_key_and_refreshes_it(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "single"))], clock)
    [first] = dispatcher.handle_batch([level(20), level(30, "tank-2")]).started[:1]
    assert dispatcher.handle_batch([level(25)]).started == []
    assert store.load(first).variables["level"] == 25
    assert dispatcher.handle_batch([level(3)]).started == []  # below the condition, still refreshes
    assert store.load(first).status == "completed"
    events = [h.event_type for h in store.history(first)]
    assert events.count("variable_changed") == 2
    assert len(store.find_instances(InstanceQuery())) == 2


def test_refreshes_in_the_same_batch_reach_the_instance_started_there(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "single"))], clock)
    result = dispatcher.handle_batch([level(20), level(22), level(1)])
    [instance_id] = result.started
    assert store.load(instance_id).status == "completed"


def test_mode_restart_cancels_the_running_instance(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "restart"))], clock)
    [first] = dispatcher.handle_batch([level(20)]).started
    [second] = dispatcher.handle_batch([level(30)]).started
    assert store.load(first).status == "cancelled"
    assert store.load(second).status == "running"


def test_mode_parallel_starts_one_per_message(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "parallel"))], clock)
    assert len(dispatcher.handle_batch([level(20), level(30)]).started) == 2


def test_mode_queued_starts_the_next_when_the_first_ends(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "queued"))], clock)
    [first] = dispatcher.handle_batch([level(20)]).started
    dispatcher.handle_batch([level(40)])
    queued = [i for i in store.find_instances(InstanceQuery()) if i.id != first]
    assert len(queued) == 1 and queued[0].tokens == ()
    dispatcher.handle_batch([level(1)])  # the first ends
    assert store.load(first).status == "completed"
    nxt = store.load(queued[0].id)
    assert nxt.current_activity == "until_low" and nxt.variables["level"] == 40


def test_timers_fire_once(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml")], clock, inline=("log", "mqtt_publish", "notify"))
    [instance_id] = dispatcher.handle_batch([reading(30.0)]).started
    assert store.load(instance_id).current_activity == "wait_recheck"
    clock.now += timedelta(minutes=5)
    timers = store.claim_due_timers(clock.now, 10, 30)
    assert len(timers) == 1
    dispatcher.fire_timers(timers)
    assert store.load(instance_id).status == "completed"
    assert dispatcher.fire_timers(timers) == []  # a second firing finds the timer used up


def test_action_outcomes_are_fed_back(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml")], clock)
    [instance_id] = dispatcher.handle_batch([reading(30.0)]).started
    [action] = store.claim_actions(clock.now, 10, 30)
    dispatcher.action_finished(action, ActionSucceeded(action.token_id, action.attempt))
    assert store.load(instance_id).current_activity == "wait_recheck"
    assert dispatcher.action_finished(action, ActionFailed(action.token_id, action.attempt, "late")) == []


def test_manual_start_and_cancel(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml")], clock)
    started = dispatcher.start("temperature-control", {"device_id": "x", "temperature": 40})
    assert started.status == "running"
    cancelled = dispatcher.control(started.id, Cancel("test"))
    assert cancelled.status == "cancelled"
    with pytest.raises(KeyError):
        dispatcher.start("nope", {})


PARALLEL_CALLS = """
id: two-calls
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: split, type: parallel, branches: [left, right]}
  - {id: left, type: service, action: mqtt_publish, config: {topic: a, payload: x}, next: merge}
  - {id: right, type: service, action: mqtt_publish, config: {topic: b, payload: y}, next: merge}
  - {id: merge, type: join}
  - {id: done, type: end}
"""


def test_many_outcomes_commit_together_and_each_row_is_used_once(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml"), definition_from(PARALLEL_CALLS)], clock)
    first = dispatcher.start("two-calls", {})
    second = dispatcher.start("two-calls", {})
    claimed = store.claim_actions(clock.now, 10, 30)
    assert len(claimed) == 4  # two per instance: their second outcomes go in a later transaction
    steps = dispatcher.actions_finished([(a, ActionSucceeded(a.token_id, a.attempt)) for a in claimed])
    assert {s.consumed_action for s in steps} == {a.idempotency_key for a in claimed}
    assert store.load(first.id).status == store.load(second.id).status == "completed"
    assert dispatcher.actions_finished([(a, ActionSucceeded(a.token_id, a.attempt)) for a in claimed]) == []
