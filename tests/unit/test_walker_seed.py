"""The seed example (temperature-control) walked through both branches, timers on an injected clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from process_engine.engine import (
    ActionSucceeded,
    InstanceCompleted,
    RecordHistory,
    Start,
    TimerFired,
    VariablesRefreshed,
)
from tests.unit.walking import T0, Scenario, example

HOT = {"device_id": "hp-1", "temperature": 27.5}


@pytest.fixture(params=[False, True], ids=["straight", "round-trip"])
def seed(request) -> Scenario:
    return Scenario(example("temperature-control.yaml"), round_trip=request.param)


def test_hot_reading_cools_then_succeeds_after_the_timer(seed: Scenario) -> None:
    seed.send(Start("i-1", variables=HOT))
    action = seed.action()
    assert action.action == "mqtt_publish"
    assert action.config == {"topic": "home/heatpump/control", "payload": {"device_id": "hp-1", "command": "activate_cooling"}}
    assert action.idempotency_key == "i-1:activate_cooling:1"
    assert seed.instance.current_activity == "activate_cooling"

    seed.send(ActionSucceeded(action.token_id, attempt=1))
    timer = seed.timer()
    assert timer.due_at == T0 + timedelta(minutes=5)
    assert seed.instance.status == "running"
    assert seed.instance.current_activity == "wait_recheck"

    seed.wait(minutes=2)
    seed.send(VariablesRefreshed({"temperature": 24.0}))
    assert seed.instance.variables["temperature"] == 24.0
    assert seed.instance.current_activity == "wait_recheck"

    seed.wait(minutes=3)
    seed.send(TimerFired(timer.timer_id))
    log = seed.action()
    assert (log.action, log.config) == ("log", {"message": "Cooling successful"})

    seed.send(ActionSucceeded(log.token_id, attempt=1))
    assert seed.instance.status == "completed"
    assert seed.instance.completed_at == T0 + timedelta(minutes=5)
    assert seed.of(InstanceCompleted)
    assert seed.visited() == ["start", "check_temp", "activate_cooling", "wait_recheck", "recheck_temp", "log_success", "end"]


def test_still_hot_after_the_timer_escalates(seed: Scenario) -> None:
    seed.send(Start("i-2", variables=HOT))
    seed.send(ActionSucceeded(seed.action().token_id, attempt=1))
    timer = seed.timer()
    seed.wait(minutes=5)
    seed.send(TimerFired(timer.timer_id))
    notify = seed.action()
    assert notify.action == "notify"
    assert notify.config == {"channel": "alert", "message": "Temperature still high after cooling"}
    seed.send(ActionSucceeded(notify.token_id, attempt=1))
    assert seed.instance.status == "completed"
    assert seed.visited()[-3:] == ["recheck_temp", "escalate", "end"]


def test_normal_reading_logs_and_ends(seed: Scenario) -> None:
    seed.send(Start("i-3", variables={"device_id": "hp-1", "temperature": 21.0}))
    log = seed.action()
    assert log.action == "log"
    assert log.config["message"].startswith("Temperature normal: 21.0")
    seed.send(ActionSucceeded(log.token_id, attempt=1))
    assert seed.instance.status == "completed"
    assert seed.visited() == ["start", "check_temp", "log_normal", "end"]


def test_the_static_threshold_and_history_of_the_start(seed: Scenario) -> None:
    seed.send(Start("i-4", variables=HOT, trigger={"fields": {"flow_temp_c": 27.5}}))
    assert seed.instance.variables == {"threshold": 25.0, **HOT}
    started = [c for c in seed.commands if isinstance(c, RecordHistory) and c.event_type == "started"]
    assert started[0].activity_id == "start"
    assert started[0].at == T0


def test_a_timer_that_fires_twice_acts_once(seed: Scenario) -> None:
    seed.send(Start("i-5", variables=HOT))
    seed.send(ActionSucceeded(seed.action().token_id, attempt=1))
    timer = seed.timer()
    seed.send(TimerFired(timer.timer_id))
    assert seed.action().action in ("log", "notify")
    seed.send(TimerFired(timer.timer_id))
    assert seed.commands == []


def test_each_decision_records_the_values_it_read(seed: Scenario) -> None:
    seed.send(Start("i-6", variables=HOT))
    seed.send(ActionSucceeded(seed.action().token_id, attempt=1))
    timer = seed.timer()
    seed.send(VariablesRefreshed({"temperature": 26.0}))
    seed.send(TimerFired(timer.timer_id))
    decisions = [c for c in seed.all_commands if isinstance(c, RecordHistory) and c.activity_id in ("check_temp", "recheck_temp")]
    assert [(c.activity_id, c.data) for c in decisions] == [
        ("check_temp", {"result": True, "path": "activate_cooling", "read": {"temperature": 27.5, "threshold": 25.0}}),
        ("recheck_temp", {"result": False, "path": "escalate", "read": {"temperature": 26.0, "threshold": 25.0}}),
    ]
