"""Replay of recorded telemetry: instance counts worked out independently, bad lines skipped."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from process_engine.adapters.definitions.yaml_loader import load_paths
from process_engine.app import definition_extensions
from process_engine.flowtest import commands
from process_engine.flowtest.replay import RecordedMessage, parse_line, parse_timestamp, replay

PROCESSES = Path(__file__).resolve().parents[2] / "processes"
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=timezone.utc)
WAIT_TIMEOUT = 600  # boiler-pressure-watch: wait_for_safe times out after 10m
RECHECK = 300  # temperature-control: wait_recheck fires after 5m, then the instance ends


@dataclass
class Recording:
    """Generated telemetry, and the instance counts worked out by hand from it."""

    lines: list[str] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=lambda: {"temperature-control": 0, "boiler-pressure-watch": 0, "freezer-door-alarm": 0})
    garbage: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    boilers_active_since: dict[str, int] = field(default_factory=dict)
    heat_pump_active_since: int | None = None
    heat_pump_starters: list[str] = field(default_factory=list)  # lines that started an instance

    def add(self, topic: str, value: object, seconds: int) -> str:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        line = json.dumps({"topic": topic, "value": value, "partition": 0, "offset": offset, "timestamp": _ms(seconds)})
        self.lines.append(line)
        return line

    def heat_pump(self, seconds: int, rng: random.Random) -> None:
        temperature = round(rng.uniform(18, 32), 1)
        line = self.add("heatpump-telemetry", {"tags": {"device_id": f"hp-{rng.randint(1, 4)}"}, "fields": {"flow_temp_c": temperature}}, seconds)
        # No correlate: the topic is one key, mode single: a hot reading starts an
        # instance only when none is active; one lives until its 5m recheck.
        since = self.heat_pump_active_since
        if since is not None and seconds >= since + RECHECK:
            self.heat_pump_active_since = since = None
        if since is None and temperature > 25.0:
            self.expected["temperature-control"] += 1
            self.heat_pump_active_since = seconds
            self.heat_pump_starters.append(line)

    def boiler(self, seconds: int, rng: random.Random) -> None:
        boiler, pressure = f"b-{rng.randint(1, 3)}", round(rng.uniform(2.0, 3.4), 2)
        self.add("boiler-telemetry", {"tags": {"boiler_id": boiler, "site": "north"}, "fields": {"pressure_bar": pressure}}, seconds)
        # mode single: one instance per boiler until its wait sees <= 2.5 bar or times out
        since = self.boilers_active_since.get(boiler)
        if since is not None and seconds >= since + WAIT_TIMEOUT:
            del self.boilers_active_since[boiler]  # the timeout fired before this reading
            since = None
        if since is not None:
            if pressure <= 2.5:
                del self.boilers_active_since[boiler]
        elif pressure > 2.8:
            self.expected["boiler-pressure-watch"] += 1
            self.boilers_active_since[boiler] = seconds

    def freezer(self, seconds: int, rng: random.Random) -> None:
        event = rng.choice(["door_open", "door_close", "defrost"])
        self.expected["freezer-door-alarm"] += event == "door_open"  # mode restart: every opening starts one
        value = {"event": event, "timestamp": _ms(seconds), "tags": {"freezer_id": f"f-{rng.randint(1, 2)}", "store": "oslo-1"}}
        self.add("freezer-events", value, seconds)


def _ms(seconds: int) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp() * 1000)


def generate(count: int, seed: int = 7) -> Recording:
    """`count` messages over a few hours, with some garbage values among them."""
    rng = random.Random(seed)
    recording = Recording()
    seconds = 0
    for _ in range(count):
        seconds += rng.randint(5, 150)
        roll = rng.random()
        if roll < 0.03:
            recording.add("heatpump-telemetry", "not json", seconds)  # dead-lettered, as live
            recording.garbage += 1
        elif roll < 0.40:
            recording.heat_pump(seconds, rng)
        elif roll < 0.80:
            recording.boiler(seconds, rng)
        else:
            recording.freezer(seconds, rng)
    return recording


@pytest.fixture(scope="module")
def definitions():
    loaded = load_paths([PROCESSES], definition_extensions())
    assert not loaded.errors
    return list(loaded.definitions.values())


def counts(report) -> dict[str, int]:
    found = {"temperature-control": 0, "boiler-pressure-watch": 0, "freezer-door-alarm": 0}
    for instance in report.instances:
        found[instance.definition_id] += 1
    return found


def test_replay_starts_the_instances_worked_out_by_hand(definitions) -> None:
    recording = generate(400)
    messages = [parse_line(line, n) for n, line in enumerate(recording.lines, 1)]
    report = replay(messages, definitions)
    assert report.messages == 400
    assert counts(report) == recording.expected
    assert recording.expected["boiler-pressure-watch"] > 3 and recording.expected["freezer-door-alarm"] > 3
    assert report.dead_lettered == recording.garbage > 0


def test_replayed_instances_show_paths_and_rendered_actions(definitions) -> None:
    hot = {"tags": {"device_id": "hp-9"}, "fields": {"flow_temp_c": 29.0}}
    messages = [RecordedMessage("heatpump-telemetry", json.dumps(hot).encode(), T0, 0, 0)]
    [instance] = replay(messages, definitions).instances
    assert (instance.definition_id, instance.status, instance.current_activity) == ("temperature-control", "running", "wait_recheck")
    assert instance.path == ("start", "check_temp", "activate_cooling")
    [action] = instance.actions
    assert (action.name, action.config["payload"]) == ("mqtt_publish", {"device_id": "hp-9", "command": "activate_cooling"})


def test_timers_due_between_messages_fire_at_recorded_time(definitions) -> None:
    hot = json.dumps({"tags": {"device_id": "hp-1"}, "fields": {"flow_temp_c": 29.0}}).encode()
    cold = json.dumps({"tags": {"device_id": "hp-1"}, "fields": {"flow_temp_c": 20.0}}).encode()
    early = replay([RecordedMessage("heatpump-telemetry", hot, T0, 0, 0), RecordedMessage("heatpump-telemetry", cold, T0 + timedelta(minutes=4), 0, 1)], definitions)
    late = replay([RecordedMessage("heatpump-telemetry", hot, T0, 0, 0), RecordedMessage("heatpump-telemetry", cold, T0 + timedelta(minutes=5), 0, 1)], definitions)
    assert early.instances[0].status == "running"
    assert late.instances[0].status == "completed" and late.instances[0].path[-2:] == ("escalate", "end")


def test_a_redelivered_message_starts_nothing_twice(definitions) -> None:
    recording = generate(300, seed=11)
    messages = [parse_line(line, n) for n, line in enumerate(recording.lines, 1)]
    # only a message that started an instance is in the trigger ledger: redeliver those
    starters = [parse_line(line, 0) for line in recording.heat_pump_starters[:5]]
    assert len(starters) == 5
    report = replay(messages + starters, definitions)
    assert report.duplicates == 5
    assert counts(report) == recording.expected


def write_recording(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "recorded.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_command_reports_and_skips_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recording = generate(300, seed=3)
    bad = ["{not json", json.dumps({"value": {}, "timestamp": 1}), json.dumps({"topic": "boiler-telemetry", "value": {}}), json.dumps({"topic": "x", "timestamp": 1, "offset": -1})]
    lines = list(recording.lines)
    for index, line in zip((10, 50, 120, 200), bad):
        lines.insert(index, line)
    path = write_recording(tmp_path, lines)
    code = commands.replay_command(str(path), [str(PROCESSES)], json_output=True)
    captured = capsys.readouterr()
    assert code == 1  # the recording was not read whole
    document = json.loads(captured.out)
    assert [b["line"] for b in document["bad_lines"]] == [11, 51, 121, 201]
    assert len(document["instances"]) == sum(recording.expected.values())
    assert document["messages"] == 300
    for number, reason in [(11, "not JSON"), (51, "'topic' is missing"), (121, "'timestamp' is missing"), (201, "'offset' must be")]:
        assert f"{path}:{number}: {reason}" in captured.err


def test_the_command_prints_instances_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recording = generate(200, seed=5)
    path = write_recording(tmp_path, recording.lines)
    code = commands.replay_command(str(path), [str(PROCESSES)], json_output=False)
    out = capsys.readouterr().out
    assert code == 0
    total = sum(recording.expected.values())
    assert out.splitlines()[-1].startswith(f"{total} instance(s) would have started")
    assert "from 200 message(s)" in out.splitlines()[-1]
    assert out.count("    path:   start") == total
    assert "action: activate_cooling: mqtt_publish" in out


def test_the_command_fails_cleanly_on_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.replay_command(str(tmp_path / "none.jsonl"), [str(PROCESSES)], json_output=False) == 1
    assert "cannot read" in capsys.readouterr().err
    path = write_recording(tmp_path, [])
    assert commands.replay_command(str(path), [str(tmp_path / "nowhere")], json_output=False) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_raw_string_values_and_timestamps_in_both_forms() -> None:
    line = json.dumps({"topic": "t", "value": '{"a": 1}', "ts": "2026-03-01T06:00:00Z", "offset": 4})
    message = parse_line(line, 1)
    assert (message.value, message.timestamp, message.partition, message.offset) == (b'{"a": 1}', T0, 0, 4)
    assert parse_timestamp(int(T0.timestamp() * 1000)) == T0
    assert parse_timestamp("2026-03-01T06:00:00") == T0
    assert parse_line(json.dumps({"topic": "t", "payload": {"b": 2}, "timestamp": 0}), 7).offset == 7
