"""Windowed variables on the in-memory store: the aggregates, their error bound, the condition, validation."""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import timedelta

import pytest

from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.domain.windows import BUCKETS, Window
from process_engine.engine.windows import add, aggregate, live
from process_engine.flowtest import commands
from process_engine.ports import IncomingMessage, InstanceQuery, MessageCoordinate
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry
from tests.unit.test_definition_validation import errors_of
from tests.unit.test_dispatcher import T0, Clock
from tests.unit.walking import definition_from

T0_MS = int(T0.timestamp() * 1000)
WINDOWED = """
id: warm
trigger: {type: kafka, topic: temps, condition: "${avg_temp} > 25", correlate: tags.id}
variables:
  - {name: temp, source: fields.temp}
  - {name: avg_temp, source: fields.temp, window: {over: 5m, aggregate: AGG}}
activities:
  - {id: start, type: start}
  - {id: cool, type: wait, condition: "${avg_temp} < 0", timeout: 1h}
  - {id: done, type: end}
"""


def exact(aggregate_name: str, readings: list[tuple[int, float]]) -> float:
    """The aggregate computed over every reading, as plain Python."""
    values = [v for _, v in readings]
    first, last = min(readings), max(readings)
    seconds = (last[0] - first[0]) / 1000
    return {
        "avg": lambda: sum(values) / len(values), "min": lambda: min(values), "max": lambda: max(values),
        "sum": lambda: sum(values), "count": lambda: len(values), "first": lambda: first[1], "last": lambda: last[1],
        "delta": lambda: last[1] - first[1], "rate": lambda: (last[1] - first[1]) / seconds if seconds else 0.0,
    }[aggregate_name]()


@pytest.mark.parametrize("name", ["avg", "min", "max", "sum", "count", "first", "last", "delta", "rate"])
def test_each_aggregate_is_exact_over_the_readings_newer_than_the_oldest_live_bucket(name: str) -> None:
    window = Window(timedelta(minutes=5), name)
    rng = random.Random(7)
    buckets: list = []
    readings = []
    at = T0_MS
    for _ in range(600):  # ten minutes at about 1/s: the first half leaves the window
        at += rng.randint(500, 1500)
        value = round(rng.uniform(-10, 40), 3)
        readings.append((at, value))
        buckets = add(buckets, window, at, value)
    kept = live(buckets, window, at)
    assert len(kept) <= BUCKETS
    edge = (at // window.width_ms - BUCKETS + 1) * window.width_ms  # where the oldest live bucket starts
    assert at - 300_000 < edge <= at - 300_000 + window.width_ms  # the bound the README states
    inside = [(t, v) for t, v in readings if t >= edge]
    assert aggregate(kept, window) == pytest.approx(exact(name, inside), rel=1e-9, abs=1e-9)


def test_a_5_minute_average_over_300_readings_is_within_the_stated_bound() -> None:
    window = Window(timedelta(minutes=5), "avg")
    buckets: list = []
    readings = [(T0_MS + 1000 * i, 20 + 5 * math.sin(i / 10)) for i in range(1, 301)]
    for at, value in readings:
        buckets = add(buckets, window, at, value)
    now = readings[-1][0]
    exact_avg = exact("avg", [(t, v) for t, v in readings if t > now - 300_000])
    values = [v for _, v in readings]
    # README: at most the readings of one bucket width (over / 60) at the old edge are left out.
    left_out = math.ceil(len(readings) / BUCKETS) + 1
    bound = (max(values) - min(values)) * left_out / (len(readings) - left_out)
    assert abs(aggregate(live(buckets, window, now), window) - exact_avg) <= bound


class Harness:
    """The dispatcher on the memory store; each message carries its Kafka timestamp."""

    def __init__(self, text: str):
        self.clock = Clock()
        self.store = MemoryInstanceStore(clock=self.clock)
        self.registry = DefinitionRegistry(self.store)
        self.registry.activate([definition_from(text)])
        ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
        self.dispatcher = Dispatcher(self.store, self.registry, clock=self.clock, new_id=lambda: next(ids))
        self.offsets = itertools.count()

    def message(self, key: str, temp: float, at_ms: int) -> IncomingMessage:
        value = json.dumps({"tags": {"id": key}, "fields": {"temp": temp}}).encode()
        return IncomingMessage(MessageCoordinate("temps", 0, next(self.offsets)), value, None, at_ms)

    def instances(self):
        return self.store.find_instances(InstanceQuery(limit=1000))


def test_a_window_condition_starts_exactly_the_instances_plain_python_says() -> None:
    rng = random.Random(11)
    harness = Harness(WINDOWED.replace("AGG", "avg"))
    keys = [f"dev-{n}" for n in range(5)]
    sent, expected = [], []
    at = T0_MS
    for _ in range(400):
        at += rng.randint(200, 3000)
        key = rng.choice(keys)
        temp = round(rng.uniform(10, 35), 2)
        sent.append(harness.message(key, temp, at))
        # Plain Python: the average of the key's readings in the bucketed window, this one included.
        width = 300_000 // BUCKETS
        inside = [m for m in sent if json.loads(m.value)["tags"]["id"] == key and m.timestamp_ms // width > at // width - BUCKETS]
        average = sum(json.loads(m.value)["fields"]["temp"] for m in inside) / len(inside)
        active = any(k == key for k in expected)  # mode single: one instance per key, never ends here
        if average > 25 and not active:
            expected.append(key)
    for start in range(0, len(sent), 7):  # batches of 7, as the consumer would hand them over
        harness.dispatcher.handle_batch(sent[start:start + 7])
    started = sorted(harness.instances(), key=lambda i: i.started_at)
    assert sorted(i.correlation_key for i in started) == sorted(expected)
    assert expected  # the test means something


def test_the_aggregate_refreshes_the_active_instance_and_a_redelivery_is_not_counted() -> None:
    harness = Harness(WINDOWED.replace("AGG", "avg"))
    first = harness.message("fz", 30, T0_MS)
    harness.dispatcher.handle_batch([first])
    (instance,) = harness.instances()
    assert instance.variables["avg_temp"] == 30
    harness.dispatcher.handle_batch([harness.message("fz", 10, T0_MS + 1000)])
    assert harness.store.load(instance.id).variables["avg_temp"] == 20
    again = harness.dispatcher.handle_batch([first])  # redelivered after a crash: in the ledger already
    assert again.duplicates == 1
    assert harness.store.load(instance.id).variables["avg_temp"] == 20
    harness.dispatcher.handle_batch([harness.message("fz", -100, T0_MS + 2000)])
    assert harness.store.load(instance.id).variables["avg_temp"] == pytest.approx(-20)


def test_a_definition_without_windows_keeps_no_trigger_state() -> None:
    harness = Harness(WINDOWED.replace("avg_temp", "temp2").replace(", window: {over: 5m, aggregate: AGG}", ""))
    harness.dispatcher.handle_batch([harness.message("fz", 30, T0_MS)])
    assert harness.store.load_trigger_states([("warm", "fz")]) == {}


@pytest.mark.parametrize(
    ("window", "error"),
    [
        ("{over: 5m, aggregate: avrage}", "unknown window aggregate 'avrage' (did you mean 'avg'?)"),
        ("{over: 5m, aggregte: avg}", "unknown window key 'aggregte' (did you mean 'aggregate'?)"),
        ("{over: fast, aggregate: avg}", "bad duration 'fast'"),
        ("{over: 0s, aggregate: avg}", "window 'over' must be from 1s to 7d"),
        ("{aggregate: avg}", "'window' needs 'over'"),
        ("5m", "'window' must be a mapping"),
    ],
)
def test_a_bad_window_is_rejected_with_a_reason(window: str, error: str) -> None:
    text = WINDOWED.replace("{over: 5m, aggregate: AGG}", window)
    assert any(error in reason for _, reason in errors_of(text)), errors_of(text)


def test_a_window_needs_a_source_variable() -> None:
    text = WINDOWED.replace("{name: avg_temp, source: fields.temp,", "{name: avg_temp, value: 1,").replace("AGG", "avg")
    assert any("'window' needs a 'source' variable" in reason for _, reason in errors_of(text))


FLOW_TEST = """
definition: warm
tests:
  - name: the average of the last 5 minutes starts and refreshes the instance
    messages:
      - {at: 0s, value: {tags: {id: a}, fields: {temp: 20}}}
      - {at: 1m, value: {tags: {id: a}, fields: {temp: 32}}}
      - {at: 2m, value: {tags: {id: a}, fields: {temp: 29}}}
      - {at: 9m, value: {tags: {id: a}, fields: {temp: 26}}}
    run_for: 1m
    expect:
      instances: 1
      variables: {avg_temp: 26, temp: 26}
  - name: an average that never climbs over 25 starts nothing
    messages:
      - {at: 0s, value: {tags: {id: b}, fields: {temp: 20}}}
      - {at: 1m, value: {tags: {id: b}, fields: {temp: 29}}}
    expect:
      instances: 0
"""


def test_a_flow_test_sees_the_windowed_values_at_its_simulated_times(tmp_path, capsys) -> None:
    (tmp_path / "warm.yaml").write_text(WINDOWED.replace("AGG", "avg"), encoding="utf-8")
    (tmp_path / "warm.test.yaml").write_text(FLOW_TEST, encoding="utf-8")
    code = commands.test_command([str(tmp_path / "warm.test.yaml")], None, None)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("PASS ") == 2, out
