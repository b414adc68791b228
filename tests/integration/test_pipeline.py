"""The Kafka trigger pipeline end to end: real broker, real PostgreSQL, real MQTT."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import (
    TcpRelay,
    committed_offsets,
    copy_example,
    engine_settings,
    rows,
    running_engine,
    seed_copy,
    telemetry,
    unique,
)

pytestmark = pytest.mark.integration


def completed_activities(store, instance_id: str) -> list[str]:
    """The activities an instance completed, in order: the path it took."""
    return [h.activity_id for h in store.history(instance_id) if h.event_type == "completed"]


def instances(store) -> list:
    return store.find_instances(InstanceQuery(limit=1000))


def all_completed(store) -> list:
    """Every instance, once all of them completed; else nothing."""
    found = instances(store)
    return found if all(i.status == "completed" for i in found) else []


def test_seed_hot_reading_starts_one_instance_and_cold_none(database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path) -> None:
    topic = unique("heatpump")
    copy_example(tmp_path, "temperature-control.yaml", {"topic: heatpump-telemetry": f"topic: {topic}"})
    create_topic(kafka_bootstrap, topic)
    recorder = mqtt_recorder("home/heatpump/control")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    with running_engine(settings) as engine:
        # Cold first: without `correlate` the topic is one key, so a later cold reading would
        # refresh the running instance rather than be ignored.
        produce_json(kafka_bootstrap, topic, [telemetry("hp-2", 20.0), telemetry("hp-1", 27.5)])
        [received] = recorder.wait_for(1, timeout=20)
        assert received.json() == {"device_id": "hp-1", "command": "activate_cooling"}
        waiting = wait_until(
            lambda: [i for i in instances(engine.store) if i.current_activity == "wait_recheck"],
            20,
            "the instance to wait on its timer",
        )
        assert len(waiting) == 1 and waiting[0].variables["device_id"] == "hp-1"
        assert len(instances(engine.store)) == 1


def test_correlation_keeps_one_instance_per_device_and_the_recheck_sees_the_refreshed_temperature(
    database_url, kafka_bootstrap, mqtt_url, tmp_path: Path
) -> None:
    topic = unique("heatpump")
    seed_copy(tmp_path, topic, timer="3s", correlate="tags.device_id")
    create_topic(kafka_bootstrap, topic)
    # 0s: every change in history (the default, 60s, records only the first per minute)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"), HISTORY_REFRESH_INTERVAL="0s")
    with running_engine(settings) as engine:
        produce_json(kafka_bootstrap, topic, [telemetry("hp-1", 27.5), telemetry("hp-2", 28.0)])
        wait_until(lambda: len(instances(engine.store)) == 2, 20, "one instance per device")
        # Both cooler and still-hot readings refresh the running instance of their device
        # and start nothing (mode single), before the 3 s timer is due.
        produce_json(kafka_bootstrap, topic, [telemetry("hp-1", 22.0), telemetry("hp-2", 29.0), telemetry("hp-1", 21.5)])
        done = wait_until(
            lambda: all_completed(engine.store),
            30,
            "both instances to complete after their recheck",
        )
        assert len(done) == 2
        by_device = {i.variables["device_id"]: i for i in done}
        cooled, still_hot = by_device["hp-1"], by_device["hp-2"]
        assert cooled.variables["temperature"] == 21.5
        assert completed_activities(engine.store, cooled.id)[-3:] == ["recheck_temp", "log_success", "end"]
        changes = [h.data for h in engine.store.history(cooled.id) if h.event_type == "variable_changed"]
        assert [(c["old"], c["new"]) for c in changes] == [(27.5, 22.0), (22.0, 21.5)]
        assert still_hot.variables["temperature"] == 29.0
        assert completed_activities(engine.store, still_hot.id)[-3:] == ["recheck_temp", "escalate", "end"]
        assert {i.correlation_key for i in done} == {"hp-1", "hp-2"}


STRICT = """
id: strict-check
name: Strict check (no trigger condition; its decision fails on a non-number)
trigger: {type: kafka, topic: TOPIC}
variables:
  - {name: temperature, source: fields.flow_temp_c}
activities:
  - {id: start, type: start}
  - {id: check, type: decision, condition: "${temperature} > 25.0", true_path: done, false_path: done}
  - {id: done, type: end}
"""


def test_bad_messages_are_recorded_and_the_good_ones_after_them_processed(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic, group = unique("heatpump"), unique("g")
    seed_copy(tmp_path, topic)
    (tmp_path / "strict-check.yaml").write_text(STRICT.replace("TOPIC", topic))
    create_topic(kafka_bootstrap, topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    with running_engine(settings) as engine:
        bad = [b"{not json", [1, 2], telemetry("hp-x", "hot")]
        produced = produce_json(kafka_bootstrap, topic, [*bad, telemetry("hp-ok", 30.0)])
        wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [4], 20, "the consumer to commit past every message")
        letters = rows(database_url, 'SELECT topic, partition, "offset", reason, payload, definition_id FROM dead_letters ORDER BY "offset"')
        assert [(d["topic"], d["partition"], d["offset"]) for d in letters] == [(topic, 0, offset) for _, offset in produced[:3]]
        assert letters[0]["reason"].startswith("not JSON") and bytes(letters[0]["payload"]) == b"{not json"
        assert letters[1]["reason"].startswith("wrong shape: expected a JSON object, got list")
        assert letters[2]["reason"].startswith("trigger of temperature-control") and letters[2]["definition_id"] == "temperature-control"
        started = {(i.definition_id, i.variables.get("device_id"), i.status) for i in instances(engine.store)}
        # The good reading after the bad ones started the seed; strict-check took both readings,
        # and the one whose expression fails at run time is failed with the reason in its history.
        assert ("temperature-control", "hp-ok", "running") in started
        strict = [i for i in instances(engine.store) if i.definition_id == "strict-check"]
        assert sorted(i.status for i in strict) == ["completed", "failed"]
        [failed] = [i for i in strict if i.status == "failed"]
        assert failed.variables["temperature"] == "hot"
        [reason] = [h.message for h in engine.store.history(failed.id) if h.event_type == "failed"]
        assert reason.startswith("decision 'check': expression '${temperature} > 25.0' failed: TypeError")
        assert failed.error == reason


BROKEN_YAML = "id: broken\ntrigger: {type: kafka, topic: [unclosed\n"


def test_hot_reload_keeps_the_others_running_and_the_last_good_version_active(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic, other_topic = unique("heatpump"), unique("other")
    seed = seed_copy(tmp_path, topic, correlate="tags.device_id")
    good_text = seed.read_text()
    create_topic(kafka_bootstrap, topic)
    create_topic(kafka_bootstrap, other_topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    with running_engine(settings) as engine:

        def started(definition_id: str, device: str) -> list:
            return [i for i in instances(engine.store) if i.definition_id == definition_id and i.variables.get("device_id", device) == device]

        def trigger(device: str, on: str = topic, definition_id: str = "temperature-control"):
            produce_json(kafka_bootstrap, on, [telemetry(device, 27.5)])
            [instance] = wait_until(lambda: started(definition_id, device), 30, f"an instance of {definition_id} for {device}")
            return instance

        assert trigger("before").definition_version == 1

        # A broken file and a new one on another topic, side by side.
        (tmp_path / "broken.yaml").write_text(BROKEN_YAML)
        (tmp_path / "other.yaml").write_text(STRICT.replace("TOPIC", other_topic).replace("strict-check", "other-topic"))
        wait_until(lambda: any("broken.yaml" in e.location_text() for e in engine.folder.errors()), 10, "broken.yaml to be reported")
        wait_until(lambda: engine.registry.current("other-topic") is not None, 10, "the new definition")
        assert trigger("beside-broken").definition_version == 1
        trigger("new-topic", on=other_topic, definition_id="other-topic")  # the subscription followed

        seed.write_text(good_text.replace("type: decision", "type: no-such-type", 1))
        wait_until(lambda: any("temperature-control.yaml" in e.location_text() for e in engine.folder.errors()), 10, "the broken seed to be reported")
        assert trigger("seed-broken").definition_version == 1  # the previous version stays active

        seed.write_text(good_text.replace("value: 25.0", "value: 26.0"))
        wait_until(lambda: engine.registry.current("temperature-control").version == 2, 10, "the fixed seed to become version 2")
        assert not any("temperature-control.yaml" in e.location_text() for e in engine.folder.errors())
        fixed = trigger("seed-fixed")
        assert fixed.definition_version == 2 and fixed.variables["threshold"] == 26.0

        (tmp_path / "other.yaml").unlink()
        wait_until(lambda: engine.registry.current("other-topic") is None, 10, "the removed definition to stop triggering")
        assert {d.id for d in engine.registry.active()} == {"temperature-control"}


def test_an_unreachable_database_pauses_consumption_and_commits_no_offset(
    database_url, kafka_bootstrap, mqtt_url, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic, group = unique("heatpump"), unique("g")
    seed_copy(tmp_path, topic, correlate="tags.device_id")
    create_topic(kafka_bootstrap, topic)
    caplog.set_level(logging.DEBUG, logger="process_engine")
    with TcpRelay(database_url) as relay:
        settings = engine_settings(relay.database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
        with running_engine(settings):
            produce_json(kafka_bootstrap, topic, [telemetry("hp-1", 27.5)])
            wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [1], 20, "the first message's commit")

            relay.cut()
            produce_json(kafka_bootstrap, topic, [telemetry("hp-2", 27.5)])
            wait_until(lambda: "database unavailable, holding 1 message(s)" in caplog.text, 30, "the consumer to hold its batch")
            assert committed_offsets(kafka_bootstrap, group, topic) == [1]
            assert len(rows(database_url, "SELECT 1 FROM process_instances")) == 1

            relay.restore()
            wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [2], 60, "the held message's commit after recovery")
            devices = rows(database_url, "SELECT variables->>'device_id' AS device FROM process_instances ORDER BY started_at")
            assert [d["device"] for d in devices] == ["hp-1", "hp-2"]


def test_a_message_the_database_cannot_store_is_recorded_and_does_not_stop_the_consumer(
    database_url, kafka_bootstrap, mqtt_url, tmp_path: Path
) -> None:
    topic, group = unique("heatpump"), unique("g")
    seed_copy(tmp_path, topic, correlate="tags.device_id")
    create_topic(kafka_bootstrap, topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    with running_engine(settings) as engine:
        # Valid JSON that PostgreSQL refuses (a NUL character in text), and a number too big
        # for a double, which jsonb could not hold either: refused as it is decoded.
        poison = [b'{"tags": {"device_id": "hp\\u0000x"}, "fields": {"flow_temp_c": 30}}', b'{"tags": {"device_id": "hp-inf"}, "fields": {"flow_temp_c": 1e999}}']
        produced = produce_json(kafka_bootstrap, topic, [telemetry("hp-before", 30.0), *poison, telemetry("hp-after", 30.0)])
        wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [4], 20, "the consumer to commit past every message")
        assert not engine.stop_event.is_set()
        assert sorted(i.variables["device_id"] for i in instances(engine.store)) == ["hp-after", "hp-before"]
        letters = rows(database_url, 'SELECT "offset", reason, payload FROM dead_letters ORDER BY "offset"')
        assert [d["offset"] for d in letters] == [offset for _, offset in produced[1:3]]
        assert letters[0]["reason"].startswith("cannot be stored:"), letters
        assert letters[1]["reason"].startswith("not JSON:") and "infinity" in letters[1]["reason"], letters
        assert [bytes(d["payload"]) for d in letters] == poison
