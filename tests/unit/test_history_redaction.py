"""History keeps `***` for header values; the outbox row that delivers the action keeps the real ones."""

from __future__ import annotations

import json
import uuid

from process_engine.engine import Start, advance
from process_engine.ports import Step
from process_engine.runtime.commit_plan import plan_commit
from process_engine.runtime.redaction import redacted
from tests.unit.walking import T0, definition_from

DEFINITION = """
id: with-secret
trigger: {type: api}
variables:
  - {name: token, source: token}
activities:
  - {id: start, type: start}
  - id: call
    type: service
    action: http
    config:
      url: https://hooks.example/alarm
      headers: {Authorization: "Bearer ${token}", X-Site: plant-7}
      body: {site: plant-7}
  - {id: end, type: end}
"""


def test_header_values_are_redacted_in_history_but_delivered() -> None:
    state, commands = advance(definition_from(DEFINITION), None, Start(str(uuid.uuid4()), {"token": "s3cret"}), T0)
    plan = plan_commit([Step(state, None, tuple(commands), state.id)])
    [requested] = [json.loads(row.data) for row in plan.history if row.event_type == "action_requested"]
    assert requested["config"]["headers"] == {"Authorization": "***", "X-Site": "***"}
    assert requested["config"]["url"] == "https://hooks.example/alarm" and requested["config"]["body"] == {"site": "plant-7"}
    assert not any("s3cret" in (row.data or "") for row in plan.history if row.event_type != "started")
    [action] = plan.actions
    assert json.loads(action.config)["headers"]["Authorization"] == "Bearer s3cret"


def test_data_without_headers_is_left_as_it_is() -> None:
    data = {"action": "mqtt_publish", "config": {"topic": "a/b"}}
    assert redacted(data) is data
    assert redacted(None) is None
    assert redacted({"config": {"headers": "not a mapping"}}) == {"config": {"headers": "not a mapping"}}
