"""Compensation in the walker: completed service activities undone last first, then the end.

Every scenario runs twice, straight through and with the instance stored and loaded
back between steps (STYLE.md).
"""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.app import custom_compensation_handlers, definition_extensions
from process_engine.domain.errors import DefinitionErrors
from process_engine.engine import ActionFailed, ActionSucceeded, Cancel, RecordHistory, Start
from tests.unit.walking import Scenario

BACKUP = """
id: backup-cooling
trigger: {type: api}
variables:
  - {name: unit, value: fz-1}
activities:
  - {id: start, type: start}
  - id: compressor_on
    type: service
    action: mqtt_publish
    config: {topic: "plant/${unit}/compressor", payload: {state: "on"}}
    compensate: {action: mqtt_publish, config: {topic: "plant/${unit}/compressor", payload: {state: "off"}}}
  - id: fan_on
    type: service
    action: mqtt_publish
    config: {topic: "plant/${unit}/fan", payload: {state: "on"}}
    compensate: {action: mqtt_publish, config: {topic: "plant/${unit}/fan", payload: {state: "off"}}}
  - id: report
    type: service
    action: log
    config: {message: "backup cooling on"}
  - {id: hold, type: timer, duration: 10m}
  - {id: done, type: end}
"""

round_trips = pytest.mark.parametrize("round_trip", [False, True], ids=["straight", "stored"])


def extensions(handlers=None):
    found = definition_extensions()
    if handlers is not None:
        found.compensation_handlers = handlers
    return found


def started(text: str = BACKUP, round_trip: bool = False, handlers=None) -> Scenario:
    """Started and through the three actions, waiting on the timer."""
    flow = Scenario(load_text(text, "backup.yaml", extensions(handlers)), round_trip)
    flow.send(Start("00000000-0000-4000-8000-000000000001"))
    for _ in range(3):
        action = flow.action()
        flow.send(ActionSucceeded(action.token_id, action.attempt, {"ok": True}))
    assert flow.instance.current_activity == "hold"
    return flow


def events(flow: Scenario) -> list[tuple[str | None, str]]:
    return [(c.activity_id, c.event_type) for c in flow.all_commands if isinstance(c, RecordHistory)]


@round_trips
def test_cancelling_undoes_both_completed_activities_last_first_then_cancels(round_trip: bool) -> None:
    flow = started(round_trip=round_trip)
    flow.send(Cancel("stopped by the operator"))
    first = flow.action()
    assert (first.idempotency_key, first.activity_id, first.config) == (
        f"{flow.instance.id}:fan_on:compensate", "fan_on", {"topic": "plant/fz-1/fan", "payload": {"state": "off"}})
    assert flow.instance.status == "running"  # not cancelled until the compensations ran
    flow.send(ActionSucceeded(first.token_id, first.attempt, None))
    second = flow.action()
    assert second.idempotency_key == f"{flow.instance.id}:compressor_on:compensate"
    assert second.config == {"topic": "plant/fz-1/compressor", "payload": {"state": "off"}}
    flow.send(ActionSucceeded(second.token_id, second.attempt, None))
    assert flow.instance.status == "cancelled" and flow.instance.tokens == ()
    assert events(flow)[-5:] == [
        ("fan_on", "compensating"), ("fan_on", "compensated"),
        ("compressor_on", "compensating"), ("compressor_on", "compensated"), (None, "cancelled"),
    ]


@round_trips
def test_a_failure_undoes_what_was_done_then_fails_with_the_reason(round_trip: bool) -> None:
    flow = Scenario(load_text(BACKUP, "backup.yaml", extensions()), round_trip)
    flow.send(Start("00000000-0000-4000-8000-000000000002"))
    action = flow.action()
    flow.send(ActionSucceeded(action.token_id, action.attempt, None))  # compressor on
    action = flow.action()
    flow.send(ActionFailed(action.token_id, action.attempt, "fan relay offline", retriable=False))
    undo = flow.action()
    assert undo.activity_id == "compressor_on" and undo.idempotency_key.endswith(":compressor_on:compensate")
    flow.send(ActionSucceeded(undo.token_id, undo.attempt, None))
    assert flow.instance.status == "failed"
    assert flow.instance.error == "action 'mqtt_publish' failed after 1 attempt(s): fan relay offline"


@round_trips
def test_a_failed_compensation_is_recorded_and_the_next_one_still_runs(round_trip: bool) -> None:
    flow = started(round_trip=round_trip)
    flow.send(Cancel())
    first = flow.action()
    flow.send(ActionFailed(first.token_id, first.attempt, "broker gone"))
    second = flow.action()
    assert second.activity_id == "compressor_on"
    flow.send(ActionSucceeded(second.token_id, second.attempt, None))
    assert flow.instance.status == "cancelled"
    assert ("fan_on", "compensation_failed") in events(flow)


@round_trips
def test_a_compensate_activity_undoes_on_its_own_path_and_continues(round_trip: bool) -> None:
    text = BACKUP.replace("  - {id: hold, type: timer, duration: 10m}\n", "  - {id: undo, type: compensate}\n")
    flow = Scenario(load_text(text, "backup.yaml", extensions()), round_trip)
    flow.send(Start("00000000-0000-4000-8000-000000000003"))
    for _ in range(3):
        action = flow.action()
        flow.send(ActionSucceeded(action.token_id, action.attempt, None))
    for expected in ("fan_on", "compressor_on"):
        undo = flow.action()
        assert undo.activity_id == expected
        flow.send(ActionSucceeded(undo.token_id, undo.attempt, None))
    assert flow.instance.status == "completed"
    assert flow.visited()[-2:] == ["undo", "done"]


def test_cancelling_with_nothing_to_undo_cancels_at_once() -> None:
    flow = Scenario(load_text(BACKUP, "backup.yaml", extensions()), round_trip=False)
    flow.send(Start("00000000-0000-4000-8000-000000000004"))
    flow.send(Cancel())
    assert flow.instance.status == "cancelled"


class CloseValve:
    """A plug-in compensation: closes the valve the activity opened, by the result it returned."""

    def validate(self, options):
        return [] if "topic" in options else ["close_valve needs 'topic'"]

    def compensate(self, context):
        payload = {"unit": context["variables"]["unit"], "state": "closed", "after": context["result"]}
        return {"action": "mqtt_publish", "config": {"topic": context["options"]["topic"], "payload": payload}}


@pytest.fixture
def valve_plugin():
    module = types.ModuleType("acme_valves")
    module.CloseValve = CloseValve
    sys.modules["acme_valves"] = module
    yield
    del sys.modules["acme_valves"]


def test_a_custom_compensation_handler_plugs_in_by_entry_point(valve_plugin) -> None:
    entry = importlib.metadata.EntryPoint("close_valve", "acme_valves:CloseValve", "process_engine.compensations")
    handlers = custom_compensation_handlers([entry])
    text = BACKUP.replace(
        'compensate: {action: mqtt_publish, config: {topic: "plant/${unit}/fan", payload: {state: "off"}}}',
        "compensate: {handler: close_valve, topic: plant/valves}",
    )
    flow = started(text, handlers=handlers)
    flow.send(Cancel())
    undo = flow.action()
    assert undo.activity_id == "fan_on"
    assert undo.config == {"topic": "plant/valves", "payload": {"unit": "fz-1", "state": "closed", "after": {"ok": True}}}
    with pytest.raises(DefinitionErrors, match="close_valve needs 'topic'"):
        load_text(text.replace("handler: close_valve, topic: plant/valves", "handler: close_valve"), "b.yaml", extensions(handlers))


def test_compensate_is_checked_when_the_definition_loads() -> None:
    text = BACKUP.replace("compensate: {action: mqtt_publish, config", "compensate: {action: mqtt_publsh, config", 1)
    with pytest.raises(DefinitionErrors, match="unknown action 'mqtt_publsh'"):
        load_text(text, "backup.yaml", extensions())


def test_a_flow_test_cancels_an_instance_and_sees_the_compensations() -> None:
    from process_engine.flowtest.report import compare
    from process_engine.flowtest.simulator import run_case
    from process_engine.flowtest.spec import parse_test_text

    spec = parse_test_text(
        """
definition: backup-cooling
tests:
  - name: cancelled while holding
    messages:
      - {at: 0s, start: {}}
      - {at: 5m, cancel: 1}
    expect:
      status: cancelled
      actions:
        - {activity: compressor_on, payload: {state: "on"}}
        - {activity: fan_on, payload: {state: "on"}}
        - {activity: report, action: log}
        - {activity: fan_on, payload: {state: "off"}}
        - {activity: compressor_on, payload: {state: "off"}}
""",
        "backup.test.yaml",
    )
    definition = load_text(BACKUP, "backup.yaml", extensions())
    assert compare(spec.tests[0].expectations, run_case(spec.tests[0], definition)) == []


RESTARTING = """
id: valve-watch
trigger: {type: kafka, topic: valves, correlate: tags.valve, mode: restart}
variables:
  - {name: valve, source: tags.valve}
activities:
  - {id: start, type: start}
  - id: open_bypass
    type: service
    action: mqtt_publish
    config: {topic: "plant/${valve}/bypass", payload: {state: open}}
    compensate: {action: mqtt_publish, config: {topic: "plant/${valve}/bypass", payload: {state: closed}}}
  - {id: hold, type: timer, duration: 1h}
  - {id: done, type: end}
"""


def test_replay_runs_the_compensation_of_an_instance_a_newer_message_restarts() -> None:
    from datetime import datetime, timezone

    from process_engine.flowtest.replay import RecordedMessage, replay

    definition = load_text(RESTARTING, "valve-watch.yaml", extensions())
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    value = b'{"tags": {"valve": "v-1"}}'
    messages = [RecordedMessage("valves", value, at, 0, 0), RecordedMessage("valves", value, at.replace(minute=5), 0, 1)]
    report = replay(messages, [definition])
    first, second = report.instances
    assert first.status == "cancelled" and second.current_activity == "hold"
    assert [(a.activity, a.config["payload"]["state"]) for a in first.actions] == [("open_bypass", "open"), ("open_bypass", "closed")]
