"""Replay over recorded telemetry starts and ends the same windowed instances as the live pipeline did."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from process_engine.adapters.definitions.yaml_loader import load_paths
from process_engine.app import definition_extensions
from process_engine.flowtest.replay import read_recording, replay
from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.kafka import consume, create_topic, produce_json
from tests.integration.engine_harness import committed_offsets, engine_settings, running_engine, unique
from tests.integration.test_replay_matches_live import as_recording, line_of

pytestmark = pytest.mark.integration

# A short window, so the readings' own timestamps decide what is in it: live uses the
# Kafka timestamps, replay the recorded ones, and the outcomes must agree exactly.
WARM = """
id: warm-average
trigger: {type: kafka, topic: TOPIC, condition: "${mean} > 27", correlate: tags.id}
variables:
  - {name: mean, source: fields.temp, window: {over: 2s, aggregate: avg}}
  - {name: peak, source: fields.temp, window: {over: 2s, aggregate: max}}
activities:
  - {id: start, type: start}
  - {id: cooled, type: wait, condition: "${mean} < 24 or ${peak} < 28", timeout: 1h}
  - {id: done, type: end}
"""


def test_replay_gives_the_live_windowed_outcomes(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic, group = unique("warm"), unique("g")
    (tmp_path / "warm-average.yaml").write_text(WARM.replace("TOPIC", topic), encoding="utf-8")
    create_topic(kafka_bootstrap, topic)
    rng = random.Random(3)
    values = [{"tags": {"id": f"d-{rng.randint(1, 3)}"}, "fields": {"temp": round(rng.uniform(18, 34), 1)}} for _ in range(200)]
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    with running_engine(settings) as engine:
        for value in values:  # one call each: the timestamps spread over a few seconds
            produce_json(kafka_bootstrap, topic, [value])
        wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [len(values)], 60, "every reading consumed")
        live = sorted((i.correlation_key, i.status, i.current_activity) for i in engine.store.find_instances(InstanceQuery(limit=10_000)))

    export = tmp_path / "recorded.jsonl"
    export.write_text("\n".join(json.dumps(line_of(m)) for m in as_recording(consume(kafka_bootstrap, topic, len(values)))) + "\n")
    messages, bad = read_recording(export)
    assert bad == []
    report = replay(messages, list(load_paths([tmp_path], definition_extensions()).definitions.values()))
    replayed = sorted((i.correlation_key, i.status, i.current_activity) for i in report.instances)
    assert replayed == live
    assert len(live) >= 3 and any(status == "completed" for _, status, _ in live)  # windows started and ended some
