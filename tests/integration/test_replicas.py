"""Several engines on one database and one consumer group: work is shared, nothing is done twice."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import (
    EngineProcess,
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
ASSIGNED = re.compile(r"process_engine\.consumer: (assigned|revoked) ?(.*)")
STARTED = re.compile(r"batch of \d+ message\(s\) committed: (\d+) started")
FIRED = re.compile(r"fired (\d+) timer\(s\)")


def assignment(engine: EngineProcess) -> set[str]:
    """The partitions an engine holds now, from its assign/revoke log lines."""
    held: set[str] = set()
    for match in ASSIGNED.finditer(engine.log()):
        kind, partitions = match.groups()
        held = set() if kind == "revoked" else {p for p in partitions.split(", ") if p and p != "nothing"}
    return held


def split_between(engines: list[EngineProcess], partitions: int) -> bool:
    """Every engine holds some partitions, none twice, all of them covered."""
    held = [assignment(engine) for engine in engines]
    union = set().union(*held)
    return all(held) and len(union) == partitions and sum(map(len, held)) == partitions


def total(pattern: re.Pattern[str], engine: EngineProcess) -> int:
    return sum(int(match.group(1)) for match in pattern.finditer(engine.log()))


def test_two_engines_in_one_group_split_the_partitions_and_start_each_instance_once(
    database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, engine_process, tmp_path: Path
) -> None:
    commands = mqtt_recorder("home/heatpump/control")
    topic, group = unique("heatpump"), unique("g")
    seed_copy(tmp_path, topic, correlate="tags.device_id")
    create_topic(kafka_bootstrap, topic, partitions=4)
    environ = engine_environ(database_url, kafka_bootstrap, mqtt_url, tmp_path, group, LOG_LEVEL="DEBUG")
    engines = [engine_process(environ, "first"), engine_process(environ, "second")]
    wait_until(lambda: split_between(engines, 4), 60, "both engines to hold partitions")

    devices = [f"hp-{n:03d}" for n in range(200)]
    produced = produce_json(kafka_bootstrap, topic, [telemetry(d, 30.0) for d in devices], key=lambda value: value["tags"]["device_id"])
    assert {partition for partition, _ in produced} == {0, 1, 2, 3}
    wait_until(lambda: scalar(database_url, "SELECT count(*) FROM trigger_ledger") == 200, 60, "every message in the ledger")

    started = rows(database_url, "SELECT variables->>'device_id' AS device FROM process_instances")
    assert sorted(r["device"] for r in started) == devices  # one instance per message, none twice
    # The log line follows the offset commit, a moment after the database commit.
    wait_until(lambda: sum(total(STARTED, engine) for engine in engines) == 200, 10, "both engines to log their batches")
    assert all(total(STARTED, engine) > 0 for engine in engines), [engine.tail() for engine in engines]
    # The outboxes of both engines delivered every instance's command.
    commands.wait_for(200, timeout=20)
    assert {m.json()["device_id"] for m in commands.messages} == set(devices)


MANY_TIMERS = """
id: many-timers
name: One timer per instance, all due within a second or two
trigger: {type: api}
variables:
  - {name: due, value: "2000-01-01T00:00:00+00:00"}
activities:
  - {id: start, type: start}
  - {id: pause, type: timer, until: "${due}"}
  - {id: done, type: end}
"""


def test_two_engines_on_one_database_fire_each_timer_once(database_url, kafka_bootstrap, mqtt_url, engine_process, tmp_path: Path) -> None:
    (tmp_path / "many-timers.yaml").write_text(MANY_TIMERS)
    environ = engine_environ(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"), LOG_LEVEL="DEBUG")
    engines = [engine_process(environ, "first"), engine_process(environ, "second")]
    for engine in engines:
        engine.wait_ready()

    count = 150
    with side_dispatcher(database_url, tmp_path) as dispatcher:
        start = datetime.now(timezone.utc) + timedelta(seconds=2)
        for n in range(count):  # due times 10 ms apart, so both engines keep waking for them
            dispatcher.start("many-timers", {"due": (start + timedelta(milliseconds=10 * n)).isoformat()})

    wait_until(lambda: scalar(database_url, "SELECT count(*) FROM process_instances WHERE status = 'completed'") == count, 30, "every timer to fire")
    fired = rows(
        database_url,
        "SELECT instance_id, count(*) AS n FROM process_history WHERE activity_id = 'pause' AND event_type = 'completed' GROUP BY instance_id",
    )
    assert len(fired) == count and {row["n"] for row in fired} == {1}
    assert scalar(database_url, "SELECT count(*) FROM process_timers") == 0
    per_engine = [total(FIRED, engine) for engine in engines]
    assert sum(per_engine) >= count and all(per_engine), per_engine  # both took part


SCHEDULED = """
id: every-minute
name: Scheduled sweep
trigger: {type: schedule, cron: "* * * * *"}
activities:
  - {id: start, type: start}
  - {id: done, type: end}
"""


def test_a_schedule_tick_starts_one_instance_across_replicas(database_url, tmp_path: Path) -> None:
    (tmp_path / "every-minute.yaml").write_text(SCHEDULED)
    ticks = [datetime(2026, 11, 23, 12, minute, tzinfo=timezone.utc) for minute in range(5)]
    with side_dispatcher(database_url, tmp_path) as first, side_dispatcher(database_url, tmp_path) as second:
        for tick in ticks:
            barrier = threading.Barrier(2)
            results: dict[str, object] = {}

            def fire(name: str, dispatcher) -> None:
                barrier.wait()
                results[name] = dispatcher.start_scheduled("every-minute", tick)

            threads = [threading.Thread(target=fire, args=item) for item in (("first", first), ("second", second))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert Counter(result is None for result in results.values()) == Counter({True: 1, False: 1}), results
            assert first.start_scheduled("every-minute", tick) is None  # and again later: still one
    assert scalar(database_url, "SELECT count(*) FROM process_instances WHERE definition_id = 'every-minute'") == len(ticks)
    ledger = rows(database_url, 'SELECT topic, "offset" FROM trigger_ledger ORDER BY "offset"')
    assert ledger == [{"topic": "schedule:every-minute", "offset": int(tick.timestamp())} for tick in ticks]
