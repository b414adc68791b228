"""Walker scenarios for every activity type, each run straight and with a JSON round trip between steps."""

from __future__ import annotations

from datetime import timedelta

import pytest

from process_engine.engine import (
    ActionFailed,
    ActionSucceeded,
    Cancel,
    CancelTimer,
    InstanceFailed,
    RecordHistory,
    Resume,
    Retry,
    RunAction,
    ScheduleTimer,
    Start,
    Suspend,
    TimerFired,
    VariablesRefreshed,
    walker,
)
from process_engine.engine.walker import advance, retry_delay
from tests.unit.walking import T0, Scenario, definition_from, example

RETRYING = """
id: retrying
trigger: {type: api}
variables:
  - {name: url, value: "http://127.0.0.1:9/x"}
activities:
  - {id: start, type: start}
  - id: call
    type: service
    action: http
    config: {url: "${url}"}
    retry: {max_attempts: 3, backoff: 2s}
    on_error: fallback
    next: done
  - {id: fallback, type: set, set: {fell_back: "True"}}
  - {id: done, type: end}
"""

FAILING = """
id: failing
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: call, type: service, action: log, config: {message: hi}}
  - {id: done, type: end}
"""

WAITING = """
id: waiting
trigger: {type: kafka, topic: t, correlate: tags.id}
variables:
  - {name: level, source: fields.level}
activities:
  - {id: start, type: start}
  - id: until_low
    type: wait
    condition: ${level} < 10
    timeout: 1h
    timeout_path: too_long
  - {id: done, type: end}
  - {id: too_long, type: set, set: {timed_out: "True"}, next: done}
"""

PARALLEL = """
id: fan-out
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: split, type: parallel, branches: [left, right]}
  - {id: left, type: service, action: log, config: {message: left}, next: merge}
  - {id: right, type: timer, duration: 10s, next: merge}
  - {id: merge, type: join}
  - {id: count, type: set, set: {n: "1 + 1", label: "'merged'"}}
  - {id: done, type: end}
"""

LOOPING = """
id: looping
trigger: {type: api}
variables:
  - {name: n, value: 0}
activities:
  - {id: start, type: start}
  - {id: bump, type: set, set: {n: "${n} + 1"}}
  - {id: again, type: decision, condition: "${n} < 5000", true_path: bump, false_path: done}
  - {id: done, type: end}
"""


@pytest.fixture(params=[False, True], ids=["straight", "round-trip"])
def round_trip(request) -> bool:
    return request.param


def test_retries_with_backoff_then_takes_on_error(round_trip: bool) -> None:
    flow = Scenario(definition_from(RETRYING), round_trip)
    flow.send(Start("r-1"))
    first = flow.action()
    assert first.config == {"url": "http://127.0.0.1:9/x"}
    flow.send(ActionFailed(first.token_id, 1, "connection refused"))
    timer = flow.timer()
    assert timer.kind == "retry"
    assert timer.due_at - T0 == retry_delay(flow.definition.activity("call"), "r-1", 1)
    assert timedelta(seconds=1.8) <= timer.due_at - T0 <= timedelta(seconds=2.2)
    flow.send(TimerFired(timer.timer_id))
    second = flow.action()
    assert second.attempt == 2 and second.idempotency_key == "r-1:call:2"
    flow.send(ActionFailed(second.token_id, 2, "connection refused"))
    flow.send(TimerFired(flow.timer().timer_id))
    third = flow.action()
    flow.send(ActionFailed(third.token_id, 3, "connection refused"))
    assert flow.instance.status == "completed"
    assert flow.instance.variables["fell_back"] is True
    assert flow.visited() == ["start", "fallback", "done"]


def test_a_non_retriable_failure_skips_the_remaining_attempts(round_trip: bool) -> None:
    flow = Scenario(definition_from(RETRYING), round_trip)
    flow.send(Start("r-2"))
    flow.send(ActionFailed(flow.action().token_id, 1, "404 not found", retriable=False))
    assert flow.instance.variables["fell_back"] is True


def test_failure_without_on_error_fails_the_instance_and_retry_runs_it_again(round_trip: bool) -> None:
    flow = Scenario(definition_from(FAILING), round_trip)
    flow.send(Start("f-1"))
    flow.send(ActionFailed(flow.action().token_id, 1, "disk full"))
    assert flow.instance.status == "failed"
    assert "disk full" in flow.instance.error
    assert flow.of(InstanceFailed)[0].reason == flow.instance.error
    assert flow.instance.current_activity == "call"
    flow.send(Retry())
    again = flow.action()
    assert again.idempotency_key == "f-1:call#2:1"
    flow.send(ActionSucceeded(again.token_id, 1))
    assert flow.instance.status == "completed"


def test_a_late_or_duplicate_action_outcome_changes_nothing(round_trip: bool) -> None:
    flow = Scenario(definition_from(FAILING), round_trip)
    flow.send(Start("f-2"))
    token = flow.action().token_id
    assert flow.send(ActionSucceeded(token, attempt=7)) == []
    flow.send(ActionSucceeded(token, attempt=1))
    assert flow.instance.status == "completed"
    assert flow.send(ActionSucceeded(token, attempt=1)) == []


def test_wait_continues_when_a_refresh_makes_the_condition_true(round_trip: bool) -> None:
    flow = Scenario(definition_from(WAITING), round_trip)
    flow.send(Start("w-1", variables={"level": 50}, correlation_key="tank-1"))
    timeout = flow.timer()
    assert timeout.kind == "wait_timeout" and timeout.due_at == T0 + timedelta(hours=1)
    flow.send(VariablesRefreshed({"level": 40}))
    assert flow.instance.current_activity == "until_low"
    flow.send(VariablesRefreshed({"level": 5}))
    assert CancelTimer(timeout.timer_id) in flow.commands
    assert flow.instance.status == "completed"
    assert "timed_out" not in flow.instance.variables
    waits = [(c.event_type, c.data["read"]) for c in flow.all_commands if isinstance(c, RecordHistory) and c.activity_id == "until_low"]
    assert waits == [("waiting", {"level": 50}), ("completed", {"level": 5})]


def test_wait_times_out_onto_its_timeout_path(round_trip: bool) -> None:
    flow = Scenario(definition_from(WAITING), round_trip)
    flow.send(Start("w-2", variables={"level": 50}))
    timeout = flow.timer()
    flow.wait(hours=1)
    flow.send(TimerFired(timeout.timer_id))
    assert flow.instance.variables["timed_out"] is True
    assert flow.instance.status == "completed"


def test_a_wait_already_satisfied_does_not_wait(round_trip: bool) -> None:
    flow = Scenario(definition_from(WAITING), round_trip)
    flow.send(Start("w-3", variables={"level": 1}))
    assert flow.instance.status == "completed"
    assert flow.of(ScheduleTimer) == []


def test_parallel_branches_join_before_going_on(round_trip: bool) -> None:
    flow = Scenario(definition_from(PARALLEL), round_trip)
    flow.send(Start("p-1"))
    action, timer = flow.action(), flow.timer()
    assert len(flow.instance.tokens) == 2
    flow.send(ActionSucceeded(action.token_id, 1))
    assert flow.instance.status == "running"
    assert {t.activity_id for t in flow.instance.tokens} == {"merge", "right"}
    flow.wait(seconds=10)
    flow.send(TimerFired(timer.timer_id))
    assert flow.instance.status == "completed"
    assert flow.instance.variables == {"n": 2, "label": "merged"}
    assert flow.visited().count("merge") == 1


def test_cancel_drops_timers_and_ignores_what_comes_later(round_trip: bool) -> None:
    flow = Scenario(example("temperature-control.yaml"), round_trip)
    flow.send(Start("c-1", variables={"device_id": "hp", "temperature": 30}))
    flow.send(ActionSucceeded(flow.action().token_id, 1))
    timer = flow.timer()
    flow.send(Cancel("operator stopped it"))
    assert flow.instance.status == "cancelled"
    assert CancelTimer(timer.timer_id) in flow.commands
    assert flow.send(TimerFired(timer.timer_id)) == []


def test_suspend_holds_a_due_timer_until_resume(round_trip: bool) -> None:
    flow = Scenario(example("temperature-control.yaml"), round_trip)
    flow.send(Start("s-1", variables={"device_id": "hp", "temperature": 30}))
    flow.send(ActionSucceeded(flow.action().token_id, 1))
    timer = flow.timer()
    flow.send(Suspend())
    assert flow.instance.status == "suspended"
    flow.wait(minutes=5)
    flow.send(TimerFired(timer.timer_id))
    assert flow.instance.current_activity == "wait_recheck"
    flow.send(Resume())
    assert flow.instance.status == "running"
    assert flow.action().action == "notify"


def test_a_loop_without_a_wait_is_stopped(round_trip: bool) -> None:
    flow = Scenario(definition_from(LOOPING), round_trip)
    flow.send(Start("l-1"))
    assert flow.instance.status == "failed"
    assert "loop" in flow.instance.error


def test_an_expression_failing_at_run_time_fails_the_instance(round_trip: bool) -> None:
    flow = Scenario(example("temperature-control.yaml"), round_trip)
    flow.send(Start("e-1", variables={"device_id": "hp", "temperature": "hot"}))
    assert flow.instance.status == "failed"
    assert "check_temp" in flow.instance.error
    assert flow.of(RunAction) == []


def test_a_missing_source_is_recorded_not_a_crash(round_trip: bool) -> None:
    flow = Scenario(definition_from(WAITING), round_trip)
    flow.send(Start("m-1", variables={"level": 50}, missing=("other",)))
    kinds = [c.event_type for c in flow.commands if hasattr(c, "event_type")]
    assert "variable_missing" in kinds
    assert flow.instance.status == "running"


def test_the_walker_is_deterministic() -> None:
    definition = definition_from(RETRYING)
    first = Scenario(definition, False)
    second = Scenario(definition, False)
    assert first.send(Start("d-1")) == second.send(Start("d-1"))
    assert first.instance == second.instance


TIMED = """
id: timed
trigger: {type: api}
variables:
  - {name: temperature, source: fields.t}
activities:
  - {id: start, type: start}
  - {id: hold, type: timer, duration: 1h}
  - {id: end, type: end}
"""


def test_a_refresh_that_repeats_every_value_is_what_the_full_walk_makes_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    definition = definition_from(TIMED)
    first, _ = advance(definition, None, Start("r-1", variables={"temperature": 21.5}), T0)
    repeat = VariablesRefreshed({"temperature": 21.5}, (), 60.0)
    shortcut = advance(definition, first, repeat, T0 + timedelta(minutes=5))
    assert shortcut[0] is first and shortcut[1] == []
    monkeypatch.setattr(walker, "_changes_nothing", lambda instance, event: False)  # the full walk, for comparison
    assert advance(definition, first, repeat, T0 + timedelta(minutes=5)) == shortcut
    monkeypatch.undo()
    # Not the shortcut: a changed value, a missing one, a condition to recheck.
    changed, commands = advance(definition, first, VariablesRefreshed({"temperature": 22.0}), T0)
    assert changed.variables["temperature"] == 22.0 and commands
    _, commands = advance(definition, first, VariablesRefreshed({"temperature": 21.5}, ("level",)), T0)
    assert [c.event_type for c in commands if isinstance(c, RecordHistory)] == ["variable_missing"]
    waiting = definition_from(WAITING)
    parked, _ = advance(waiting, None, Start("w-9", variables={"level": 50}), T0)
    assert not walker._changes_nothing(parked, VariablesRefreshed({"level": 50}))
