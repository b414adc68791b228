"""Compensation against the real servers: cancel after two completed actions, undone over MQTT last first."""

from __future__ import annotations

from pathlib import Path

import pytest

from process_engine.engine import Cancel
from tests.fixtures import wait_until
from tests.integration.engine_harness import engine_settings, running_engine, unique

pytestmark = pytest.mark.integration

BACKUP = """
id: backup-cooling
trigger: {type: api}
variables:
  - {name: unit, source: unit}
activities:
  - {id: start, type: start}
  - id: compressor_on
    type: service
    action: mqtt_publish
    config: {topic: "PLANT/${unit}/compressor", payload: {state: "on"}}
    compensate: {action: mqtt_publish, config: {topic: "PLANT/${unit}/compressor", payload: {state: "off"}}}
  - id: fan_on
    type: service
    action: mqtt_publish
    config: {topic: "PLANT/${unit}/fan", payload: {state: "on"}}
    compensate: {action: mqtt_publish, config: {topic: "PLANT/${unit}/fan", payload: {state: "off"}}}
  - {id: hold, type: timer, duration: 1h}
  - {id: done, type: end}
"""


def test_cancelling_after_two_actions_publishes_both_compensations_in_reverse_once_each(
    database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path
) -> None:
    plant = unique("plant")
    (tmp_path / "backup-cooling.yaml").write_text(BACKUP.replace("PLANT", plant))
    recorder = mqtt_recorder(f"{plant}/#")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    with running_engine(settings) as engine:
        instance = engine.dispatcher.start("backup-cooling", {"unit": "fz-1"})
        recorder.wait_for(2, timeout=20)
        wait_until(lambda: engine.store.load(instance.id).current_activity == "hold", 20, "the instance to wait on its timer")
        engine.dispatcher.control(instance.id, Cancel("cancelled by the operator"))
        received = recorder.wait_for(4, timeout=20)
        assert [(m.topic.split("/")[-1], m.json()["state"]) for m in received] == [
            ("compressor", "on"), ("fan", "on"), ("fan", "off"), ("compressor", "off"),
        ]
        ended = wait_until(lambda: (i := engine.store.load(instance.id)).status == "cancelled" and i, 20, "the cancel")
        assert ended.error is None
        if recorder.protocol == "5":
            keys = [m.user_properties.get("idempotency-key") for m in received[2:]]
            assert keys == [f"{instance.id}:fan_on:compensate", f"{instance.id}:compressor_on:compensate"]
        history = [(h.activity_id, h.event_type) for h in engine.store.history(instance.id)]
        assert history[-5:] == [
            ("fan_on", "compensating"), ("fan_on", "compensated"),
            ("compressor_on", "compensating"), ("compressor_on", "compensated"), (None, "cancelled"),
        ]
        metrics = engine.metrics.exposition().decode()
        assert 'process_engine_compensations_total{definition="backup-cooling",outcome="done"} 2.0' in metrics
    assert len(recorder.messages) == 4  # once each: nothing was sent again
