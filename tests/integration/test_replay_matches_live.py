"""Replay over recorded telemetry reports the same instances as the live pipeline did."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from process_engine.adapters.definitions.yaml_loader import load_paths
from process_engine.app import definition_extensions
from process_engine.flowtest.replay import RecordedMessage, read_recording, replay
from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.kafka import consume, create_topic, produce_json
from tests.integration.engine_harness import committed_offsets, copy_example, engine_settings, running_engine, unique

pytestmark = pytest.mark.integration
COUNT = 300

# Like boiler-pressure-watch, but its actions are `log`, which runs inside the step as
# replay's simulated actions do: how long a real MQTT round trip takes between two
# readings cannot change the outcome, so live and replay must agree exactly.
WATCH = """
id: pressure-watch
trigger:
  type: kafka
  topic: TOPIC
  condition: fields.pressure_bar > 2.8
  correlate: tags.boiler_id
variables:
  - {name: boiler_id, source: tags.boiler_id}
  - {name: pressure, source: fields.pressure_bar}
activities:
  - {id: start, type: start}
  - {id: open_relief, type: service, action: log, config: {message: "open relief on ${boiler_id}"}}
  - {id: wait_for_safe, type: wait, condition: "${pressure} <= 2.5", timeout: 10m, timeout_path: page}
  - {id: close_relief, type: service, action: log, config: {message: "close relief on ${boiler_id}"}, next: done}
  - {id: page, type: service, action: log, config: {message: "page the operator"}}
  - {id: done, type: end}
"""


def recorded_telemetry(rng: random.Random, boiler_topic: str, heat_topic: str) -> list[tuple[str, object]]:
    """A few hundred readings from four boilers and one heat pump, some not JSON."""
    values: list[tuple[str, object]] = []
    for _ in range(COUNT):
        roll = rng.random()
        if roll < 0.05:
            values.append((boiler_topic, "not json"))
        elif roll < 0.7:
            boiler = f"b-{rng.randint(1, 4)}"
            reading = {"tags": {"boiler_id": boiler, "site": "north"}, "fields": {"pressure_bar": round(rng.uniform(2.0, 3.4), 2)}}
            values.append((boiler_topic, reading))
        else:
            values.append((heat_topic, {"tags": {"device_id": "hp-1"}, "fields": {"flow_temp_c": round(rng.uniform(20, 30), 1)}}))
    return values


def as_recording(messages) -> list[RecordedMessage]:
    """What `kafka-console-consumer`-style exports hold: topic, value, partition, offset, timestamp."""
    recorded = []
    for message in sorted(messages, key=lambda m: m.timestamp()[1]):
        stamp = datetime.fromtimestamp(message.timestamp()[1] / 1000, timezone.utc)
        recorded.append(RecordedMessage(message.topic(), message.value(), stamp, message.partition(), message.offset()))
    return recorded


def test_replay_counts_the_same_instances_as_the_live_pipeline(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    boiler_topic, heat_topic = unique("boiler"), unique("heatpump")
    (tmp_path / "pressure-watch.yaml").write_text(WATCH.replace("TOPIC", boiler_topic), encoding="utf-8")
    copy_example(tmp_path, "temperature-control.yaml", {"topic: heatpump-telemetry": f"topic: {heat_topic}"})
    for topic in (boiler_topic, heat_topic):
        create_topic(kafka_bootstrap, topic)
    values = recorded_telemetry(random.Random(5), boiler_topic, heat_topic)
    group = unique("g")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    with running_engine(settings) as engine:
        # One produce call per message keeps the order across the two topics.
        for topic, value in values:
            produce_json(kafka_bootstrap, topic, [value])
        totals = Counter(topic for topic, _ in values)
        for topic, total in totals.items():
            wait_until(lambda topic=topic, total=total: committed_offsets(kafka_bootstrap, group, topic) == [total], 60, f"all of {topic} consumed")
        live = Counter(i.definition_id for i in engine.store.find_instances(InstanceQuery(limit=10_000)))
        dead_live = len(engine.store.dead_letters(limit=10_000))

    recording = as_recording(consume(kafka_bootstrap, boiler_topic, totals[boiler_topic]) + consume(kafka_bootstrap, heat_topic, totals[heat_topic]))
    export = tmp_path / "recorded.jsonl"
    export.write_text("\n".join(json.dumps(line_of(m)) for m in recording) + "\n", encoding="utf-8")
    messages, bad = read_recording(export)
    assert bad == []
    definitions = list(load_paths([tmp_path], definition_extensions()).definitions.values())
    report = replay(messages, definitions)

    assert Counter(i.definition_id for i in report.instances) == live
    assert live["pressure-watch"] > 3 and live["temperature-control"] >= 1
    assert report.dead_lettered == dead_live == values.count((boiler_topic, "not json"))


def line_of(message: RecordedMessage) -> dict:
    """One JSON line of the export, with the value as recorded."""
    try:
        value: object = json.loads(message.value)
    except ValueError:
        value = message.value.decode("utf-8", "replace")
    return {
        "topic": message.topic,
        "value": value,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": message.timestamp.isoformat(),
    }
