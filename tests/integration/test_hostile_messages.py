"""Messages built to stop the engine, replayed over the real broker, PostgreSQL and MQTT.

Each one is dead-lettered with its reason (or fails only its own instance), the
offsets move past it, and a good reading after it still starts its instance.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import (
    committed_offsets,
    engine_settings,
    rows,
    running_engine,
    seed_copy,
    telemetry,
    unique,
)

pytestmark = pytest.mark.integration

UNTIL = """
id: until-check
trigger: {type: kafka, topic: TOPIC, condition: "fields.wake_at is not None", correlate: tags.device_id}
variables:
  - {name: wake_at, source: fields.wake_at}
activities:
  - {id: start, type: start}
  - {id: sleep, type: timer, until: "${wake_at}"}
  - {id: done, type: end}
"""


def nested(levels: int) -> bytes:
    """JSON text of an object `levels` deep: {"a": {"a": ... {} ...}} (too deep for orjson.dumps)."""
    return b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1)


def test_poison_messages_are_dead_lettered_and_the_next_good_one_starts(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic, group = unique("heatpump"), unique("g")
    seed_copy(tmp_path, topic, correlate="tags.device_id")
    create_topic(kafka_bootstrap, topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, group, MAX_MESSAGE_BYTES="8192")
    deep_key = b'{"tags": {"device_id": ' + nested(1000) + b'}, "fields": {"flow_temp_c": 30.0}}'
    poison = [
        deep_key,  # json.dumps of the key raised RecursionError and stopped the consumer
        orjson.dumps({"tags": {"device_id": "big"}, "fields": {"flow_temp_c": 30.0, "blob": "x" * 9000}}),
        b'{"tags": {"device_id": "arr"}, "fields": {"flow_temp_c": 30, "n": ' + b"[" * 2000 + b"]" * 2000 + b"}}",
    ]
    with running_engine(settings) as engine:
        produced = produce_json(kafka_bootstrap, topic, [*poison, telemetry("hp-after", 30.0)])
        wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [4], 30, "the consumer to commit past every message")
        assert not engine.stop_event.is_set()
        letters = rows(database_url, 'SELECT "offset", reason FROM dead_letters ORDER BY "offset"')
        assert [d["offset"] for d in letters] == [offset for _, offset in produced[:3]]
        assert letters[0]["reason"] == "nested deeper than 64 levels"
        assert letters[1]["reason"] == f"too large: {len(poison[1]):,} bytes, over MAX_MESSAGE_BYTES (8,192)"
        assert letters[2]["reason"].startswith("not JSON:")
        started = engine.store.find_instances(InstanceQuery(limit=10))
        assert [i.variables["device_id"] for i in started] == ["hp-after"]


def test_an_until_past_year_9999_fails_its_instance_and_the_engine_goes_on(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic, group = unique("wake"), unique("g")
    (tmp_path / "until-check.yaml").write_text(UNTIL.replace("TOPIC", topic))
    create_topic(kafka_bootstrap, topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    with running_engine(settings) as engine:
        produce_json(kafka_bootstrap, topic, [
            {"tags": {"device_id": "far"}, "fields": {"wake_at": 1e15}},  # OverflowError in the timer
            {"tags": {"device_id": "near"}, "fields": {"wake_at": "2999-01-01T00:00:00Z"}},
        ])
        wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [2], 30, "the consumer to commit both messages")
        found = {i.correlation_key: i for i in engine.store.find_instances(InstanceQuery(limit=10))}
        assert found["far"].status == "failed"
        assert found["far"].error == "timer 'sleep': 'until' gave 1000000000000000.0: a time past the years 1 to 9999"
        assert (found["near"].status, found["near"].current_activity) == ("running", "sleep")
        assert not engine.stop_event.is_set()
