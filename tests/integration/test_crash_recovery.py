"""Crashes at the worst moments, with real processes: nothing is done twice, nothing is lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_INVALID

from process_engine.adapters.kafka.consumer import CRASH_AFTER_DB_COMMIT_ENV, CRASH_EXIT_CODE
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import (
    committed_offsets,
    engine_environ,
    engine_process,  # noqa: F401 (fixture)
    rows,
    scalar,
    seed_copy,
    side_dispatcher,
    telemetry,
    unique,
)

pytestmark = pytest.mark.integration


def test_a_crash_between_database_commit_and_offset_commit_starts_no_duplicate(
    database_url, kafka_bootstrap, mqtt_url, engine_process, tmp_path: Path
) -> None:
    topic, group = unique("crash-commit"), unique("g")
    seed_copy(tmp_path, topic)
    create_topic(kafka_bootstrap, topic)
    [(_, offset)] = produce_json(kafka_bootstrap, topic, [telemetry("hp-1", 27.5)])
    environ = engine_environ(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)

    crashing = engine_process({**environ, CRASH_AFTER_DB_COMMIT_ENV: "1"}, "crashing")
    assert crashing.wait_exit(60) == CRASH_EXIT_CODE, crashing.tail()
    assert committed_offsets(kafka_bootstrap, group, topic) == [OFFSET_INVALID]  # nothing committed
    [instance] = rows(database_url, "SELECT id, status, current_activity FROM process_instances")
    ledger = rows(database_url, 'SELECT topic, partition, "offset", definition_id, instance_id FROM trigger_ledger')
    assert ledger == [{"topic": topic, "partition": 0, "offset": offset, "definition_id": "temperature-control", "instance_id": instance["id"]}]

    restarted = engine_process({**environ, "LOG_LEVEL": "DEBUG"}, "restarted")  # same group: redelivered to it
    wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [offset + 1], 60, "the redelivered message's offset commit")
    instances = rows(database_url, "SELECT id, current_activity FROM process_instances")
    assert [i["id"] for i in instances] == [instance["id"]]
    assert len(rows(database_url, "SELECT 1 FROM trigger_ledger")) == 1
    [batch] = restarted.wait_for_log("batch of 1 message(s) committed")
    assert batch.endswith("0 started, 0 refreshed, 0 dead-lettered, 1 duplicate(s)")
    # (Whether the restarted engine sends the instance's MQTT command at once depends on
    # whether the crashed one had claimed it: a claim is held for the outbox lease, 60 s.)
    # SIGTERM: the batch in hand is committed, the group left, and the exit is clean.
    assert restarted.terminate() == 0, restarted.tail()
    assert restarted.lines("revoked") and restarted.lines("stopped")


CRASH_CHECK = """
id: crash-check
name: A timer and two actions, across a crash
trigger: {type: api}
variables:
  - {name: n, value: 0}
activities:
  - {id: start, type: start}
  - {id: fork, type: parallel, branches: [pause, announce]}
  - {id: pause, type: timer, duration: 4s, next: meet}
  - {id: announce, type: service, action: mqtt_publish, config: {topic: "RUN/announce", payload: {n: "${n}"}}, next: meet}
  - {id: meet, type: join, next: report}
  - {id: report, type: service, action: mqtt_publish, config: {topic: "RUN/report", payload: {n: "${n}"}}, next: done}
  - {id: done, type: end}
"""


def count(database_url: str, sql: str) -> int:
    return scalar(database_url, sql)


def test_sigkill_with_timers_and_actions_pending_loses_nothing_and_fires_each_timer_once(
    database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, engine_process, tmp_path: Path
) -> None:
    run = unique("crash")
    (tmp_path / "crash-check.yaml").write_text(CRASH_CHECK.replace("RUN", run))
    recorder = mqtt_recorder(f"{run}/#")
    environ = engine_environ(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    crashed = engine_process(environ, "crashed")
    crashed.wait_ready()

    with side_dispatcher(database_url, tmp_path) as dispatcher:
        # Instances the engine has taken up to their timer: announce delivered, timer pending.
        early = [dispatcher.start("crash-check", {"n": n}).id for n in range(20)]
        wait_until(
            lambda: count(database_url, "SELECT count(*) FROM process_history WHERE activity_id = 'announce' AND event_type = 'completed'") == 20,
            20,
            "the engine to deliver the first announcements",
        )
        # Freeze the engine, then commit more work as a step of it would: actions in the
        # outbox and timers, none of them claimed by anyone yet.
        os.kill(crashed.pid, signal.SIGSTOP)
        late = [dispatcher.start("crash-check", {"n": n}).id for n in range(20, 30)]
    assert count(database_url, "SELECT count(*) FROM process_outbox WHERE claimed_until IS NULL") == 10
    assert count(database_url, "SELECT count(*) FROM process_timers WHERE claimed_until IS NULL") == 30
    assert count(database_url, "SELECT count(*) FROM process_outbox") == 10
    assert count(database_url, "SELECT count(*) FROM process_timers") == 30
    crashed.kill()

    engine_process(environ, "restarted").wait_ready()
    wait_until(
        lambda: count(database_url, "SELECT count(*) FROM process_instances WHERE status = 'completed'") == 30,
        30,
        "every instance to complete after the restart",
    )
    fired = rows(
        database_url,
        "SELECT instance_id::text AS id, count(*) AS n FROM process_history WHERE activity_id = 'pause' AND event_type = 'completed' GROUP BY instance_id",
    )
    assert {row["id"]: row["n"] for row in fired} == {instance_id: 1 for instance_id in early + late}
    assert count(database_url, "SELECT count(*) FROM process_timers") == 0
    assert count(database_url, "SELECT count(*) FROM process_outbox") == 0

    recorder.wait_for(60, timeout=10)
    received = {(m.topic.rsplit("/", 1)[1], m.json()["n"]) for m in recorder.messages}
    assert received == {(kind, n) for kind in ("announce", "report") for n in range(30)}
    if recorder.protocol == "5":
        keys = {m.user_properties["idempotency-key"] for m in recorder.messages}
        assert keys == {f"{i}:{activity}:1" for i in early + late for activity in ("announce", "report")}
