"""Telemetry holds against the real servers: dropped holds, a SIGKILL, two replicas, cooldowns."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import (
    committed_offsets,
    engine_environ,
    engine_process,  # noqa: F401 (fixture)
    engine_settings,
    rows,
    running_engine,
    scalar,
    unique,
)
from tests.integration.test_replicas import split_between

pytestmark = pytest.mark.integration

FREEZER = """
id: freezer-hold
trigger:
  type: kafka
  topic: TOPIC
  condition: fields.temp_c > -10
  correlate: tags.freezer_id
  RULES
variables:
  - {name: freezer_id, source: tags.freezer_id}
  - {name: temp_c, source: fields.temp_c}
activities:
  - {id: start, type: start}
  - {id: until_cold, type: wait, condition: "${temp_c} < -15", timeout: 1h}
  - {id: end, type: end}
"""


def freezer(folder: Path, topic: str, rules: str) -> None:
    (folder / "freezer-hold.yaml").write_text(FREEZER.replace("TOPIC", topic).replace("RULES", rules))


def reading(freezer_id: str, temp_c: float) -> dict:
    return {"tags": {"freezer_id": freezer_id}, "fields": {"temp_c": temp_c}}


def keyed(value: dict) -> str:
    return value["tags"]["freezer_id"]


def started_keys(database_url: str) -> list[str]:
    return sorted(r["correlation_key"] for r in rows(database_url, "SELECT correlation_key FROM process_instances"))


def metric(engine, name: str, **labels: str) -> float:
    value = engine.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_a_hold_dropped_by_a_cool_reading_starts_nothing(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic = unique("freezer")
    freezer(tmp_path, topic, "for: 3s")
    create_topic(kafka_bootstrap, topic)
    with running_engine(engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))) as engine:
        produce_json(kafka_bootstrap, topic, [reading("fz-1", -8.0)], key=keyed)
        wait_until(lambda: scalar(database_url, "SELECT count(*) FROM trigger_holds WHERE due_at IS NOT NULL") == 1, 20, "the hold to open")
        produce_json(kafka_bootstrap, topic, [reading("fz-1", -20.0)], key=keyed)
        wait_until(lambda: scalar(database_url, "SELECT count(*) FROM trigger_holds") == 0, 20, "the cool reading to drop the hold")
        # A hold opened after the drop completes after fz-1's would have: then the sweep has passed it.
        produce_json(kafka_bootstrap, topic, [reading("fz-marker", -8.0)], key=keyed)
        wait_until(lambda: started_keys(database_url) != [], 30, "the marker's hold to complete")
        assert started_keys(database_url) == ["fz-marker"]
        assert metric(engine, "process_engine_trigger_holds_dropped_total", definition="freezer-hold", reason="condition") == 1
        assert metric(engine, "process_engine_trigger_holds_opened_total", definition="freezer-hold") == 2
        assert metric(engine, "process_engine_trigger_holds_completed_total", definition="freezer-hold", rule="for") == 1
        assert b"process_engine_trigger_holds_dropped_total" in engine.metrics.exposition()


def test_cooldown_suppresses_starts_and_lets_them_through_once_it_ends(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic = unique("freezer")
    freezer(tmp_path, topic, "cooldown: 3s")
    create_topic(kafka_bootstrap, topic)
    with running_engine(engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))) as engine:
        produce_json(kafka_bootstrap, topic, [reading("fz-1", -8.0), reading("fz-1", -20.0)], key=keyed)
        wait_until(lambda: scalar(database_url, "SELECT count(*) FROM trigger_holds WHERE cooldown_until IS NOT NULL") == 1, 20, "the end to start a cooldown")
        assert rows(database_url, "SELECT status FROM process_instances") == [{"status": "completed"}]
        produce_json(kafka_bootstrap, topic, [reading("fz-1", -7.0), reading("fz-1", -6.0)], key=keyed)
        suppressed = "process_engine_trigger_starts_suppressed_total"
        wait_until(lambda: metric(engine, suppressed, definition="freezer-hold", reason="cooldown") == 2, 20, "both readings to be suppressed")
        assert scalar(database_url, "SELECT count(*) FROM process_instances") == 1
        wait_until(lambda: scalar(database_url, "SELECT bool_and(cooldown_until <= now()) FROM trigger_holds"), 20, "the cooldown to end")
        produce_json(kafka_bootstrap, topic, [reading("fz-1", -5.0)], key=keyed)
        wait_until(lambda: scalar(database_url, "SELECT count(*) FROM process_instances WHERE status = 'running'") == 1, 20, "a start after the cooldown")


def test_a_hold_completing_across_a_sigkill_starts_exactly_one_instance(
    database_url, kafka_bootstrap, mqtt_url, engine_process, tmp_path: Path
) -> None:
    topic, group = unique("freezer"), unique("g")
    freezer(tmp_path, topic, "for: 4s")
    create_topic(kafka_bootstrap, topic)
    environ = engine_environ(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    crashed = engine_process(environ, "crashed")
    crashed.wait_ready()
    keys = [f"fz-{n}" for n in range(5)]
    produced = produce_json(kafka_bootstrap, topic, [reading(k, -8.0) for k in keys], key=keyed)
    wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [produced[-1][1] + 1], 30, "the readings' offsets to be committed")
    assert scalar(database_url, "SELECT count(*) FROM trigger_holds WHERE due_at IS NOT NULL") == 5
    crashed.kill()  # before any hold is due: they come due while no engine runs
    assert scalar(database_url, "SELECT count(*) FROM process_instances") == 0

    engine_process(environ, "restarted").wait_ready()
    # The start and the hold's end commit together: once no hold is left, every start is in.
    wait_until(lambda: scalar(database_url, "SELECT count(*) FROM trigger_holds") == 0, 30, "the restarted engine to complete the holds")
    assert started_keys(database_url) == keys
    assert rows(database_url, "SELECT DISTINCT variables->>'temp_c' AS t FROM process_instances") == [{"t": "-8.0"}]


def test_two_replicas_with_200_keys_holding_at_once_start_200_instances(
    database_url, kafka_bootstrap, mqtt_url, engine_process, tmp_path: Path
) -> None:
    topic, group = unique("freezer"), unique("g")
    freezer(tmp_path, topic, "for: 3s")
    create_topic(kafka_bootstrap, topic, partitions=4)
    environ = engine_environ(database_url, kafka_bootstrap, mqtt_url, tmp_path, group, LOG_LEVEL="DEBUG")
    engines = [engine_process(environ, "first"), engine_process(environ, "second")]
    wait_until(lambda: split_between(engines, 4), 60, "both engines to hold partitions")

    keys = [f"fz-{n:03d}" for n in range(200)]
    # Two warm readings per key: the second updates the hold, racing the other replica's sweep near the due time.
    produce_json(kafka_bootstrap, topic, [reading(k, -8.0) for k in keys], key=keyed)
    produce_json(kafka_bootstrap, topic, [reading(k, -7.0) for k in keys], key=keyed)
    wait_until(lambda: scalar(database_url, "SELECT count(*) FROM process_instances") >= 200, 60, "200 instances")
    wait_until(lambda: scalar(database_url, "SELECT count(*) FROM trigger_holds") == 0, 30, "every hold to be used up")
    assert started_keys(database_url) == keys  # one per key, none twice
    temps = rows(database_url, "SELECT DISTINCT variables->>'temp_c' AS t FROM process_instances")
    assert {r["t"] for r in temps} <= {"-8.0", "-7.0"}
