"""Holds in simulated time: a flow test file using `for:` and `cooldown:`, and replay over recorded readings."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from process_engine.flowtest import commands
from process_engine.flowtest.replay import RecordedMessage, parse_line, replay
from process_engine.ports import IncomingMessage, MessageCoordinate
from tests.unit.test_dispatcher import T0
from tests.unit.test_trigger_holds import Harness, hot

FLOWS = Path(__file__).resolve().parent / "flows"


def test_the_hold_flow_tests_pass_in_simulated_time(capsys: pytest.CaptureFixture[str]) -> None:
    code = commands.test_command([str(FLOWS / "freezer-hold.test.yaml")], None, None)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("PASS ") == 4 and "4 passed, 0 failed" in out


def recording() -> list[str]:
    """Readings a minute apart for 20 minutes: fz-1 stays warm, fz-2 cools at 3m, fz-3 warms at 10m."""
    lines = []
    for minute in range(20):
        for key, temp in (("fz-1", 30), ("fz-2", 30 if minute < 3 else 10), ("fz-3", 10 if minute < 10 else 30)):
            at = T0 + timedelta(minutes=minute)
            value = {"tags": {"id": key}, "fields": {"temp": temp}}
            lines.append(json.dumps({"topic": "temps", "key": key, "value": value, "offset": len(lines), "timestamp": at.isoformat()}))
    return lines


def test_replay_starts_the_instances_the_live_dispatcher_starts() -> None:
    definition = hot("for: 5m, cooldown: 30m")
    messages = [parse_line(line, n) for n, line in enumerate(recording(), 1)]
    replayed = replay(messages, [definition])
    expected = [("fz-1", T0 + timedelta(minutes=5)), ("fz-3", T0 + timedelta(minutes=15))]
    assert [(i.correlation_key, i.started_at) for i in replayed.instances] == expected

    live = Harness(hot("for: 5m, cooldown: 30m"))
    for message in messages:
        live.wait(message.timestamp - live.clock.now)  # the sweep, as time passes between messages
        live.dispatcher.handle_batch([_incoming(message)])
    started = sorted((i.correlation_key, i.started_at) for i in live.instances())
    assert started == expected


def _incoming(message: RecordedMessage) -> IncomingMessage:
    return IncomingMessage(MessageCoordinate(message.topic, message.partition, message.offset), message.value, message.key)
