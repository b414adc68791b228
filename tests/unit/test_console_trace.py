"""The console's trace of one instance, read from the history the walker wrote: path, steps, redaction."""

from __future__ import annotations

from dataclasses import replace

from process_engine.adapters.http.console_views import dead_letter_view, readable_bytes, trigger_rows
from process_engine.adapters.http.trace import Change, redacted, trace_path, trace_steps
from process_engine.engine import ActionFailed, ActionSucceeded, RecordHistory, Start, TimerFired, VariablesRefreshed
from process_engine.ports import DeadLetter, HistoryRecord, MessageCoordinate
from tests.unit.walking import Scenario, definition_from, example

HOT = {"device_id": "hp-1", "temperature": 27.5}
FRAGILE = """
id: fragile
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: call, type: service, action: log, config: {message: hi}}
  - {id: end, type: end}
"""


def history(scenario: Scenario) -> list[HistoryRecord]:
    """The history rows a store would give back for the scenario's instance."""
    assert scenario.instance is not None
    rows = [c for c in scenario.all_commands if isinstance(c, RecordHistory)]
    return [HistoryRecord(str(n), scenario.instance.id, c.activity_id, c.event_type, c.at, c.data, c.message) for n, c in enumerate(rows)]


def escalated() -> Scenario:
    """The seed: hot, cooled, still hot five minutes later (a refresh said 26.0), escalated."""
    seed = Scenario(example("temperature-control.yaml"), round_trip=True)
    seed.send(Start("i-1", variables=HOT))
    seed.send(ActionSucceeded(seed.action().token_id, attempt=1))
    timer = seed.timer()
    seed.wait(minutes=2)
    seed.send(VariablesRefreshed({"temperature": 26.0}))
    seed.wait(minutes=3)
    seed.send(TimerFired(timer.timer_id))
    seed.send(ActionSucceeded(seed.action().token_id, attempt=1))
    return seed


def test_the_path_taken_is_the_activities_visited_and_the_arrows_followed() -> None:
    seed = escalated()
    path = trace_path(seed.definition, seed.instance, history(seed))
    assert path.visited == {"start", "check_temp", "activate_cooling", "wait_recheck", "recheck_temp", "escalate", "end"}
    assert path.taken == {
        ("start", "check_temp"), ("check_temp", "activate_cooling"), ("activate_cooling", "wait_recheck"),
        ("wait_recheck", "recheck_temp"), ("recheck_temp", "escalate"), ("escalate", "end"),
    }
    assert path.current == frozenset() and path.failed == frozenset()


def test_a_waiting_instance_is_marked_where_it_waits() -> None:
    seed = Scenario(example("temperature-control.yaml"), round_trip=False)
    seed.send(Start("i-2", variables=HOT))
    seed.send(ActionSucceeded(seed.action().token_id, attempt=1))
    path = trace_path(seed.definition, seed.instance, history(seed))
    assert path.current == {"wait_recheck"}
    assert ("activate_cooling", "wait_recheck") in path.taken and ("wait_recheck", "recheck_temp") not in path.taken


def test_each_step_says_what_it_read_changed_and_ran() -> None:
    seed = escalated()
    steps = trace_steps(seed.definition, history(seed))
    titles = [step.title for step in steps]
    assert titles[:4] == ["Instance started", "start completed", "Decision check_temp: True \u2192 activate_cooling", "Action mqtt_publish requested (attempt 1)"]
    assert "Variable temperature changed" in titles and "Decision recheck_temp: False \u2192 escalate" in titles
    by_title = {step.title: step for step in steps}
    assert by_title["Instance started"].changes == (Change("device_id", None, "hp-1"), Change("temperature", None, 27.5), Change("threshold", None, 25.0))
    assert by_title["Decision recheck_temp: False \u2192 escalate"].read == {"temperature": 26.0, "threshold": 25.0}
    assert by_title["Variable temperature changed"].changes == (Change("temperature", 27.5, 26.0),)
    assert by_title["Variable temperature changed"].offset == "+2m"
    cooling = by_title["Action mqtt_publish requested (attempt 1)"]
    assert cooling.config == {"topic": "home/heatpump/control", "payload": {"device_id": "hp-1", "command": "activate_cooling"}}
    assert by_title["Timer wait_recheck fired"].offset == "+5m"
    timer = next(step for step in steps if step.event_type == "timer_scheduled")
    assert timer.title.startswith("Timer wait_recheck due at ") and timer.tone == "wait"
    assert titles[-1] == "Instance completed"


def test_a_failed_attempt_and_the_error_path_are_steps_and_arrows() -> None:
    boiler = Scenario(example("boiler-pressure-watch.yaml"), round_trip=False)
    boiler.send(Start("b-1", variables={"boiler_id": "b1", "pressure": 3.1, "site": "s1"}))
    relief = boiler.action()
    boiler.send(ActionFailed(relief.token_id, attempt=1, error="MQTT broker busy"))
    boiler.wait(seconds=3)
    boiler.send(TimerFired(boiler.timer().timer_id))
    boiler.send(ActionFailed(relief.token_id, attempt=2, error="MQTT broker refused", retriable=False))
    records = history(boiler)
    steps = {step.event_type: step for step in trace_steps(boiler.definition, records)}
    assert steps["retry_scheduled"].title.startswith("Attempt 2 of open_relief due at ")
    assert (steps["action_failed"].title, steps["action_failed"].tone, steps["action_failed"].message) == (
        "Action failed (attempt 2, not retriable)", "fail", "MQTT broker refused",
    )
    assert steps["error_path"].title == "Error path taken"
    assert ("open_relief", "alert_operator") in trace_path(boiler.definition, boiler.instance, records).taken

    fragile = Scenario(definition_from(FRAGILE), round_trip=False)
    fragile.send(Start("f-1"))
    fragile.send(ActionFailed(fragile.action().token_id, attempt=1, error="disk full", retriable=False))
    assert fragile.instance.status == "failed"
    path = trace_path(fragile.definition, fragile.instance, history(fragile))
    assert path.failed == {"call"} and path.current == frozenset()


def test_secrets_in_an_actions_config_are_shown_as_stars() -> None:
    config = {
        "url": "http://plc.local/api",
        "headers": {"Authorization": "Bearer abc", "X-Site": "s1"},
        "password": "hunter2",
        "body": [{"api_key": "k-1", "value": 3}, {"nested": {"Secret": {"deep": "x"}}}],
        "token": None,
    }
    assert redacted(config) == {
        "url": "http://plc.local/api",
        "headers": {"Authorization": "***", "X-Site": "***"},
        "password": "***",
        "body": [{"api_key": "***", "value": 3}, {"nested": {"Secret": {"deep": "***"}}}],
        "token": None,
    }


def test_dead_letters_and_triggers_read_as_text() -> None:
    letter = DeadLetter(MessageCoordinate("t", 2, 41), "not JSON: Expecting value", b'{"a": [1, 2]}', b"hp-\xff", "seed")
    view = dead_letter_view(letter)
    assert (view.topic, view.partition, view.offset, view.key) == ("t", 2, 41, "hp-\ufffd")
    assert view.payload == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert readable_bytes(b"\x00<oops>") == "\x00<oops>" and readable_bytes(None) == "(no payload)"
    assert readable_bytes(b"x" * 70000).endswith("(4464 more characters)")
    rows = dict(trigger_rows(example("boiler-pressure-watch.yaml")))
    assert rows == {"type": "kafka", "topic": "boiler-telemetry", "condition": "fields.pressure_bar > 2.8", "correlate": "tags.boiler_id", "mode": "single"}
    with_hold = definition_from(FRAGILE.replace("trigger: {type: api}", "trigger: {type: kafka, topic: t}"))
    assert dict(trigger_rows(with_hold))["correlate"].startswith("(none: the Kafka message key")
    # Trigger settings the parsed Trigger does not carry (for:, cooldown:, ...) show as written.
    held = replace(with_hold, raw={**with_hold.raw, "trigger": {"type": "kafka", "topic": "t", "for": "5m", "cooldown": "30m", "count": 3}})
    assert trigger_rows(held)[-3:] == [("for", "5m"), ("cooldown", "30m"), ("count", "3")]
