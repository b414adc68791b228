"""A rule written from the starter example, three freezers on one topic, no `correlate`.

Keyed telemetry (one Kafka key per device, as Telegraf and most bridges produce it)
gives each freezer its own instance; unkeyed telemetry shares one, and the loader says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import committed_offsets, engine_settings, running_engine, unique

pytestmark = pytest.mark.integration

FREEZER = """
id: freezer-watch
trigger: {type: kafka, topic: TOPIC, condition: "fields.temp_c > -10"}
variables:
  - {name: device_id, source: tags.device_id}
  - {name: temperature, source: fields.temp_c}
activities:
  - {id: start, type: start}
  - {id: hold, type: timer, duration: 2s}
  - id: still_warm
    type: decision
    condition: ${temperature} > -10
    true_path: alarm
    false_path: recovered
  - id: alarm
    type: service
    action: mqtt_publish
    config:
      topic: ALARMS/${device_id}
      payload: {device_id: "${device_id}", temp_c: "${temperature}"}
    next: done
  - {id: recovered, type: end}
  - {id: done, type: end}
"""


def reading(device: str, temp: float) -> dict:
    return {"measurement": "freezer", "tags": {"device_id": device}, "fields": {"temp_c": temp}}


def test_three_keyed_freezers_get_one_instance_each(database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path, caplog) -> None:
    topic, alarms = unique("freezers"), unique("alarms")
    (tmp_path / "freezer-watch.yaml").write_text(FREEZER.replace("TOPIC", topic).replace("ALARMS", alarms))
    create_topic(kafka_bootstrap, topic)
    recorder = mqtt_recorder(f"{alarms}/#")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    with caplog.at_level(logging.WARNING, logger="process_engine"), running_engine(settings) as engine:
        warm = [reading("fz-1", -4.0), reading("fz-2", -5.0), reading("fz-3", -3.0)]
        produce_json(kafka_bootstrap, topic, [*warm, reading("fz-2", -18.0)], key=lambda value: value["tags"]["device_id"])
        received = recorder.wait_for(2, timeout=30)
        assert sorted(m.topic for m in received) == [f"{alarms}/fz-1", f"{alarms}/fz-3"]
        assert sorted(m.json()["temp_c"] for m in received) == [-4.0, -3.0]
        done = wait_until(
            lambda: [i for i in engine.store.find_instances(InstanceQuery(limit=10)) if i.status == "completed"][2:],
            30, "all three instances to end",
        )
        found = {i.correlation_key: i for i in engine.store.find_instances(InstanceQuery(limit=10))}
        assert done and sorted(found) == ["fz-1", "fz-2", "fz-3"]
        assert {key: i.variables["device_id"] for key, i in found.items()} == {"fz-1": "fz-1", "fz-2": "fz-2", "fz-3": "fz-3"}
        assert found["fz-2"].variables["temperature"] == -18.0  # refreshed by its own reading only
        path = [h.activity_id for h in engine.store.history(found["fz-2"].id) if h.event_type == "completed"]
        assert path == ["start", "hold", "still_warm", "recovered"]
    warnings = [r.getMessage() for r in caplog.records if "warning:" in r.getMessage()]
    assert len(warnings) == 1 and "has no 'correlate'" in warnings[0] and "correlate: tags.device_id" in warnings[0]


def test_unkeyed_messages_of_one_topic_share_one_instance(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic, group = unique("freezers"), unique("g")
    (tmp_path / "freezer-watch.yaml").write_text(FREEZER.replace("TOPIC", topic).replace("ALARMS", unique("alarms")))
    create_topic(kafka_bootstrap, topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    with running_engine(settings) as engine:
        produce_json(kafka_bootstrap, topic, [reading("fz-1", -4.0), reading("fz-2", -5.0)])
        wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [2], 30, "both messages to be committed")
        [shared] = engine.store.find_instances(InstanceQuery(limit=10))
        assert shared.correlation_key == "*" and shared.variables["device_id"] == "fz-2"
