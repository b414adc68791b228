"""What the benchmark feeds the engine: its definitions, its messages, and a fast producer."""

from __future__ import annotations

import json
import time
from pathlib import Path

from confluent_kafka import Producer

SEED_EXAMPLE = Path(__file__).resolve().parents[1] / "processes" / "temperature-control.yaml"

# The five-activity process of the goal: start, decision, set, service `log`, end.
FIVE_ACTIVITIES = """\
id: bench-five
name: Benchmark, five activities
trigger:
  type: kafka
  topic: {topic}
  condition: fields.flow_temp_c > 0
variables:
  - name: device_id
    source: tags.device_id
  - name: temperature
    source: fields.flow_temp_c
  - name: sent_at
    source: sent_at
  - name: threshold
    value: 25.0
activities:
  - id: start
    type: start
  - id: check_temp
    type: decision
    condition: ${{temperature}} > ${{threshold}}
    true_path: classify
    false_path: classify
  - id: classify
    type: set
    set:
      excess: ${{temperature}} - ${{threshold}}
  - id: note
    type: service
    action: log
    config:
      message: "${{device_id}} at ${{temperature}} C"
      level: debug
  - id: end
    type: end
"""

# A process whose instances wait on a timer: for timer lateness and memory per waiting instance.
WAITING = """\
id: bench-wait
name: Benchmark, waiting on a timer
trigger:
  type: kafka
  topic: {topic}
  correlate: tags.device_id
variables:
  - name: device_id
    source: tags.device_id
  - name: temperature
    source: fields.flow_temp_c
activities:
  - id: start
    type: start
  - id: hold
    type: timer
    duration: 1d
  - id: end
    type: end
"""


# T5: every key holds (`for: 1h` never comes due within the run), so each message
# opens or updates its device's hold and starts nothing: the cost of holds alone.
HOLDING = """\
id: bench-hold
name: Benchmark, every key holding
trigger:
  type: kafka
  topic: {topic}
  condition: fields.flow_temp_c > 0
  correlate: tags.device_id
  for: 1h
variables:
  - name: device_id
    source: tags.device_id
  - name: temperature
    source: fields.flow_temp_c
activities:
  - id: start
    type: start
  - id: end
    type: end
"""


def write_holding(folder: Path, hold_topic: str) -> None:
    """The T5 definition, added while the engine runs: it subscribes at its next folder scan."""
    (folder / "bench-hold.yaml").write_text(HOLDING.format(topic=hold_topic), encoding="utf-8")


def write_definitions(folder: Path, five_topic: str, seed_topic: str, wait_topic: str) -> None:
    """The three benchmark definitions; the seed example's activities unchanged."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench-five.yaml").write_text(FIVE_ACTIVITIES.format(topic=five_topic), encoding="utf-8")
    (folder / "bench-wait.yaml").write_text(WAITING.format(topic=wait_topic), encoding="utf-8")
    # One instance per device: without `correlate` the whole topic is one key, and every
    # later reading would refresh the one waiting instance instead of starting another.
    seed = SEED_EXAMPLE.read_text(encoding="utf-8").replace(
        "topic: heatpump-telemetry", f"topic: {seed_topic}\n  correlate: tags.device_id"
    )
    (folder / "temperature-control.yaml").write_text(seed, encoding="utf-8")


def telemetry(number: int, sent_at: float | None = None, device: str | None = None) -> bytes:
    """One heat-pump reading as the seed's telemetry looks; always above the seed threshold."""
    document = {
        "measurement": "heatpump",
        "tags": {"device_id": device or f"hp-{number % 1000}"},
        "fields": {"flow_temp_c": 26.0 + (number % 50) / 10},
        "sent_at": sent_at if sent_at is not None else time.time(),
    }
    return json.dumps(document).encode()


def producer(bootstrap: str) -> Producer:
    """A producer tuned for throughput (batches of thousands, small linger)."""
    return Producer({
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000,
        "acks": 1,
    })


def produce_backlog(bootstrap: str, topic: str, count: int, device_prefix: str | None = None) -> float:
    """Produce `count` readings as fast as the broker takes them; returns messages per second.

    With `device_prefix` every reading comes from a device of its own.
    """
    sink = producer(bootstrap)
    began = time.perf_counter()
    for number in range(count):
        device = f"{device_prefix}{number}" if device_prefix else None
        _produce(sink, topic, telemetry(number, device=device))
    if sink.flush(60):
        raise TimeoutError(f"messages to {topic} were not all delivered within 60 s")
    return count / (time.perf_counter() - began)


def produce_paced(bootstrap: str, topic: str, rate: float, seconds: float) -> int:
    """Produce at `rate` messages per second for `seconds`, each stamped with its produce time."""
    sink = producer(bootstrap)
    sink.poll(0)
    began = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            _produce(sink, topic, telemetry(sent))
            sent += 1
        sink.poll(0)
        time.sleep(0.001)
    sink.flush(30)
    return sent


def _produce(sink: Producer, topic: str, value: bytes) -> None:
    while True:
        try:
            sink.produce(topic, value)
            return
        except BufferError:  # local queue full: let librdkafka send some first
            sink.poll(0.01)
