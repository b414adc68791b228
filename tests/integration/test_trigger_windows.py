"""Windowed variables against the real servers: a SIGKILL mid-window leaves the aggregate a crash-free run gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import (
    committed_offsets,
    engine_environ,
    engine_process,  # noqa: F401 (fixture)
    rows,
    scalar,
    unique,
)

pytestmark = pytest.mark.integration

AVERAGED = """
id: averaged
trigger: {type: kafka, topic: TOPIC, condition: "${n} >= 1", correlate: tags.id}
variables:
  - {name: n, source: fields.temp, window: {over: 1h, aggregate: count}}
  - {name: total, source: fields.temp, window: {over: 1h, aggregate: sum}}
  - {name: mean, source: fields.temp, window: {over: 1h, aggregate: avg}}
activities:
  - {id: start, type: start}
  - {id: watch, type: wait, condition: "${n} > 100000", timeout: 1h}
  - {id: end, type: end}
"""


def readings(part: int) -> list[dict]:
    return [{"tags": {"id": f"dev-{n % 3}"}, "fields": {"temp": round(part * 7.25 + n * 0.5, 2)}} for n in range(60)]


def aggregates(database_url: str) -> dict[str, dict]:
    found = rows(database_url, "SELECT correlation_key, variables FROM process_instances")
    return {r["correlation_key"]: {k: r["variables"][k] for k in ("n", "total", "mean")} for r in found}


def test_a_sigkill_mid_window_leaves_the_aggregates_of_a_run_without_a_crash(
    database_url, kafka_bootstrap, mqtt_url, engine_process, tmp_path: Path
) -> None:
    topic, group = unique("windows"), unique("g")
    (tmp_path / "averaged.yaml").write_text(AVERAGED.replace("TOPIC", topic))
    create_topic(kafka_bootstrap, topic)
    environ = engine_environ(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    crashed = engine_process(environ, "crashed")
    crashed.wait_ready()
    sent = readings(1)
    produce_json(kafka_bootstrap, topic, sent, key=lambda v: v["tags"]["id"])
    wait_until(lambda: scalar(database_url, "SELECT count(*) FROM trigger_holds") > 0, 30, "the first readings in a window")
    crashed.kill()  # mid-window, maybe between a batch's commit and its offsets' commit
    more = readings(2)
    produced = produce_json(kafka_bootstrap, topic, more, key=lambda v: v["tags"]["id"])
    sent += more

    engine_process(environ, "restarted").wait_ready()
    wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [produced[-1][1] + 1], 60, "every reading's offset to be committed")
    expected = {}
    for key in ("dev-0", "dev-1", "dev-2"):
        temps = [r["fields"]["temp"] for r in sent if r["tags"]["id"] == key]
        expected[key] = {"n": len(temps), "total": sum(temps), "mean": sum(temps) / len(temps)}
    wait_until(lambda: aggregates(database_url).keys() == expected.keys(), 30, "one instance per key")
    found = aggregates(database_url)
    for key, values in expected.items():
        assert found[key]["n"] == values["n"]  # no redelivered reading was counted twice, none was lost
        assert found[key]["total"] == pytest.approx(values["total"], rel=1e-12)
        assert found[key]["mean"] == pytest.approx(values["mean"], rel=1e-12)
    stored = rows(database_url, "SELECT windows FROM trigger_holds")
    assert all(len(json.loads(json.dumps(r["windows"]))["n"]["b"]) <= 60 for r in stored)  # bounded per key
