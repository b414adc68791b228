"""`process-engine run` stops cleanly on SIGTERM with work in flight: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import (
    EngineProcess,
    engine_environ,
    engine_process,  # noqa: F401 (fixture)
    rows,
    seed_copy,
    telemetry,
    unique,
)

pytestmark = pytest.mark.integration
STOP_DEADLINE = 30.0


class Telemetry:
    """Produces readings, one device per message and every fifth one cold, until stopped."""

    def __init__(self, bootstrap: str, topic: str, limit: int = 3000):
        self.bootstrap = bootstrap
        self.topic = topic
        self.limit = limit
        self.hot: list[str] = []
        self.cold: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def start(self) -> Telemetry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set() and number < self.limit:
            devices = [f"hp-{number + i}" for i in range(20)]
            temperatures = [20.0 if (number + i) % 5 == 0 else 27.5 for i in range(20)]
            produce_json(self.bootstrap, self.topic, [telemetry(d, t) for d, t in zip(devices, temperatures)])
            for device, temperature in zip(devices, temperatures):  # delivered: produce_json waited
                (self.hot if temperature > 25 else self.cold).append(device)
            number += len(devices)


def instances_per_device(database_url: str) -> dict[str, int]:
    found = rows(database_url, "SELECT variables->>'device_id' AS device, count(*) AS n FROM process_instances GROUP BY 1")
    return {row["device"]: row["n"] for row in found}


def http_url(engine: EngineProcess) -> str:
    [line] = engine.wait_for_log("HTTP control plane on")
    return re.search(r"(http://[0-9.:]+)", line).group(1)


def stop_within_deadline(engine: EngineProcess) -> float:
    """SIGTERM; the seconds the graceful stop took (exit code 0 asserted)."""
    began = time.monotonic()
    code = engine.terminate(timeout=STOP_DEADLINE)
    took = time.monotonic() - began
    assert code == 0 and took < STOP_DEADLINE, f"exit {code} after {took:.1f}s\n{engine.tail()}"
    return took


def test_sigterm_with_work_in_flight_loses_and_doubles_nothing(
    database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, engine_process, tmp_path: Path
) -> None:
    topic = unique("graceful")
    folder = tmp_path / "processes"
    folder.mkdir()
    seed_copy(folder, topic, correlate="tags.device_id")  # one instance per device
    create_topic(kafka_bootstrap, topic, partitions=2)
    commands = mqtt_recorder("home/heatpump/control")
    environ = engine_environ(database_url, kafka_bootstrap, mqtt_url, folder, unique("g"), LOG_FORMAT="json")

    first = engine_process(environ, "first")
    first.wait_ready(60)
    assert httpx.get(f"{http_url(first)}/readyz", timeout=10).status_code == 200
    readings = Telemetry(kafka_bootstrap, topic).start()
    try:
        wait_until(lambda: sum(instances_per_device(database_url).values()) >= 40, 60, "instances to start")
        stop_within_deadline(first)  # readings keep arriving while it stops
    finally:
        readings.stop()
    assert readings.hot and readings.cold

    second = engine_process(environ, "second")
    second.wait_ready(60)
    wait_until(lambda: len(instances_per_device(database_url)) >= len(readings.hot), 60, f"{len(readings.hot)} instances")
    wait_until(lambda: len({m.json()["device_id"] for m in commands.messages}) >= len(readings.hot), 60, "every cooling command")
    stop_within_deadline(second)

    counts = instances_per_device(database_url)
    assert set(counts) == set(readings.hot), "a hot reading without an instance, or a cold one with one"
    assert {device: n for device, n in counts.items() if n != 1} == {}, "readings with more than one instance"
    assert {m.json()["device_id"] for m in commands.messages} == set(readings.hot)  # at least once each
    first_lines = [json.loads(line) for line in first.log().splitlines() if line.startswith("{")]
    assert first_lines[-1]["message"] == "stopped"
    started = [line for line in first_lines if line["logger"] == "process_engine.instances"]
    assert started and {"instance_id", "definition_id", "correlation_id", "correlation_key", "causation_id"} <= set(started[0])
    assert started[0]["causation_id"].startswith(f"{topic}:")
