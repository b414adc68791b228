"""The parts of `process-engine dev` that need no server: fast timers, simulator, feed, addresses."""

from __future__ import annotations

import io
import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from process_engine.adapters.definitions.yaml_loader import load_paths
from process_engine.app import definition_extensions
from process_engine.devstack import dev
from process_engine.devstack.fast_timers import FastTimerCopy, scale_text, scaled
from process_engine.devstack.feed import ActivityFeed
from process_engine.devstack.simulator import Simulator
from process_engine.domain.instance import InstanceState
from process_engine.engine.commands import RecordHistory
from process_engine.engine.triggers import match
from process_engine.ports import Step

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ROOT / "processes"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("given", "expected"), [
    ("5m", "30s"), ("PT2M", "12s"), ("10m", "60s"), ("1h", "360s"), ("30s", "5s"), ("8s", "5s"),
    ("3s", None), ("5s", None), ("not a duration", None), (None, None),
])
def test_durations_shrink_tenfold_but_not_below_five_seconds(given: Any, expected: str | None) -> None:
    assert scaled(given) == expected


def test_only_timer_durations_and_wait_timeouts_change_in_place() -> None:
    text = (
        "id: demo  # a comment that stays\n"
        "activities:\n"
        "  - {id: quick, type: timer, duration: 5m, next: slow}\n"
        "  - id: slow\n    type: timer\n    duration: 'PT10M'\n"
        "  - id: hold\n    type: wait\n    condition: ${x} > 1\n    timeout: 10m   # why\n"
        "  - id: call\n    type: service\n    action: http\n    config: {url: 'http://x', timeout: 5m}\n"
    )
    scaled_text, changes = scale_text(text)
    assert changes == ["quick 5m -> 30s", "slow PT10M -> 60s", "hold 10m -> 60s"]
    expected = (text.replace("duration: 5m", "duration: 30s").replace("'PT10M'", "60s")
                .replace("timeout: 10m   # why", "timeout: 60s   # why"))
    assert scaled_text == expected  # the http timeout is not a timer: untouched


def test_text_that_does_not_parse_is_copied_unchanged() -> None:
    assert scale_text("id: [unclosed\n") == ("id: [unclosed\n", [])


def test_the_fast_copy_of_the_examples_loads_with_the_same_line_numbers(tmp_path: Path) -> None:
    copy = FastTimerCopy(PROCESSES, tmp_path / "fast")
    assert copy.sync()
    result = load_paths([copy.target], definition_extensions())
    assert not result.errors and set(result.definitions) == {
        "temperature-control", "boiler-pressure-watch", "freezer-door-alarm", "freezer-temperature-alarm"}
    assert not list(copy.target.glob("*.test.yaml"))  # flow tests are not definitions
    for fast in copy.target.glob("*.yaml"):
        assert len(fast.read_text().splitlines()) == len((PROCESSES / fast.name).read_text().splitlines())
    assert "temperature-control.yaml: wait_recheck 5m -> 30s" in copy.summary()
    assert "freezer-temperature-alarm.yaml: trigger for 5m -> 30s, trigger cooldown 30m -> 180s, until_cold 2h -> 720s" in copy.summary()


def test_the_fast_copy_follows_edits_and_deletions(tmp_path: Path) -> None:
    source = tmp_path / "defs"
    source.mkdir()
    original = source / "a.yaml"
    original.write_text("id: a\nactivities:\n  - id: t\n    type: timer\n    duration: 5m\n")
    copy = FastTimerCopy(source, tmp_path / "fast")
    copy.sync()
    assert not copy.sync()  # nothing changed
    original.write_text("id: a\nactivities:\n  - id: t\n    type: timer\n    duration: 20m\n")
    assert copy.sync() and "duration: 120s" in (copy.target / "a.yaml").read_text()
    original.unlink()
    assert copy.sync() and not (copy.target / "a.yaml").exists() and copy.summary() == []


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def produce(self, topic: str, key: str, value: str, on_delivery: Any) -> None:
        self.sent.append((topic, key, json.loads(value)))

    def poll(self, timeout: float) -> int:
        return 0


def simulate(seconds: int) -> list[tuple[str, str, dict[str, Any]]]:
    definitions = load_paths([PROCESSES], definition_extensions()).definitions
    simulator = Simulator("unused:9092", {d.trigger.topic for d in definitions.values()}, seed=7)
    producer = FakeProducer()
    for second in range(seconds):
        simulator.produce_second(producer, second, NOW)
    assert simulator.unknown == []
    return producer.sent


def started_keys(seconds: int) -> dict[str, set[str]]:
    """Which device keys start an instance of each definition in the first `seconds`."""
    definitions = load_paths([PROCESSES], definition_extensions()).definitions
    started: dict[str, set[str]] = {}
    for topic, key, value in simulate(seconds):
        for definition in definitions.values():
            if definition.trigger.topic == topic and match(definition, value).matched:
                started.setdefault(definition.id, set()).add(key)
    return started


def test_the_simulator_starts_every_example_within_seconds() -> None:
    assert started_keys(5) == {"temperature-control": {"hp-1"}, "boiler-pressure-watch": {"b-2", "b-4"},
                               "freezer-door-alarm": {"f-3"}}
    # The freezer alarm holds for 5 minutes (30 s with fast timers): fz-2 warms up after 30 s.
    assert started_keys(40)["freezer-temperature-alarm"] == {"fz-2"}


def test_the_simulator_sends_a_few_messages_a_second_shaped_like_devices() -> None:
    sent = simulate(120)
    assert 1.5 <= len(sent) / 120 <= 4.0
    heat = next(value for topic, _, value in sent if topic == "heatpump-telemetry")
    assert heat["measurement"] == "heatpump" and set(heat["tags"]) >= {"device_id"} and "flow_temp_c" in heat["fields"]
    assert heat["timestamp"] == "2026-01-01T12:00:00.000Z"
    boiler = next(value for topic, _, value in sent if topic == "boiler-telemetry")
    assert set(boiler["tags"]) == {"boiler_id", "site"} and "pressure_bar" in boiler["fields"]
    doors = [value for topic, _, value in sent if topic == "freezer-events"]
    assert {d["event"] for d in doors} == {"door_open", "door_close"}
    assert all(set(d["tags"]) == {"freezer_id", "store"} for d in doors)
    b2 = [value["fields"]["pressure_bar"] for topic, key, value in sent if key == "b-2"]
    assert max(b2) > 2.8 and min(b2) < 2.5  # the relief valve story: over the threshold, then safe


def test_the_feed_prints_starts_actions_timers_and_ends() -> None:
    out = io.StringIO()
    feed = ActivityFeed(out, sourced=lambda definition_id: {"device_id", "temperature"})
    instance = InstanceState("0f07639a-aaaa", "temperature-control", 1)
    variables = {"threshold": 25.0, "device_id": "hp-2", "temperature": 27.5, "reading": {"nested": True}}
    feed([Step(instance, None, (
        RecordHistory("start", "started", NOW, {"variables": variables}),
        RecordHistory("activate_cooling", "action_requested", NOW,
                      {"action": "mqtt_publish", "config": {"topic": "home/heatpump/control"}, "attempt": 1}),
        RecordHistory(None, "variable_changed", NOW, {"name": "temperature"}),
    ))])
    feed([Step(instance, 1, (
        RecordHistory("activate_cooling", "completed", NOW, {"attempt": 1}),
        RecordHistory("wait_recheck", "completed", NOW, {"timer": "t-1"}),
        RecordHistory(None, "process_completed", NOW, None, "instance completed"),
    ))])
    lines = [line.split("  ", 1)[1].split() for line in out.getvalue().splitlines()]
    assert lines == [
        ["temperature-control", "0f07639a-aaaa", "started", "device_id=hp-2", "temperature=27.5", "threshold=25.0"],
        ["temperature-control", "0f07639a-aaaa", "done", "activate_cooling:", "mqtt_publish", "home/heatpump/control"],
        ["temperature-control", "0f07639a-aaaa", "timer", "fired", "wait_recheck"],
        ["temperature-control", "0f07639a-aaaa", "completed"],
    ]


def test_http_address_port_zero_and_a_taken_default_pick_a_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dev.choose_http_addr("127.0.0.1:0") != "127.0.0.1:0"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(dev, "DEFAULT_HTTP_ADDR", f"127.0.0.1:{port}")
        assert dev.choose_http_addr(None) != f"127.0.0.1:{port}"
        assert dev.choose_http_addr(f"127.0.0.1:{port}") == f"127.0.0.1:{port}"  # asked for: the engine says it is taken


def test_missing_definitions_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(dev.DevStackError, match="no definitions at .*--definitions"):
        dev.dev_command(definitions=str(tmp_path / "nowhere"))
