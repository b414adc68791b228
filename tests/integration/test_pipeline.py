"""The Kafka trigger pipeline end to end: real broker, real PostgreSQL, real MQTT."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import copy_example, engine_settings, running_engine

pytestmark = pytest.mark.integration


def telemetry(device: str, temp: float) -> dict:
    return {"measurement": "heatpump", "tags": {"device_id": device}, "fields": {"flow_temp_c": temp}}


def test_seed_hot_reading_starts_one_instance_and_cold_none(database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path) -> None:
    topic = f"heatpump-{uuid.uuid4().hex[:8]}"
    copy_example(tmp_path, "temperature-control.yaml", {"topic: heatpump-telemetry": f"topic: {topic}"})
    create_topic(kafka_bootstrap, topic)
    recorder = mqtt_recorder("home/heatpump/control")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, f"g-{uuid.uuid4().hex[:8]}")
    with running_engine(settings) as engine:
        produce_json(kafka_bootstrap, topic, [telemetry("hp-1", 27.5), telemetry("hp-2", 20.0)])
        [received] = recorder.wait_for(1, timeout=20)
        assert received.json() == {"device_id": "hp-1", "command": "activate_cooling"}
        instances = wait_until(
            lambda: [i for i in engine.store.find_instances(InstanceQuery()) if i.current_activity == "wait_recheck"],
            20,
            "the instance to wait on its timer",
        )
        assert len(instances) == 1 and instances[0].variables["device_id"] == "hp-1"
        assert len(engine.store.find_instances(InstanceQuery())) == 1
