"""S1 screening, S2 refresh, S3 reaction: the engine at telemetry rates, beside raw consumes of the same run.

Screening and refresh are timed by the consumer group's committed offsets: a message
is done when its offset is committed, which the engine does only after the database
has what the message caused. The raw figure is a confluent-kafka consumer that
decodes each message and makes the same comparison in plain Python.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.engine_control import EngineProcess
from benchmarks.raw import consume_rate
from benchmarks.servers import execute
from tests.fixtures.kafka import create_topic
from benchmarks.workload import _produce, producer

# S1: a correlated trigger whose condition no reading meets (most telemetry starts nothing).
SCREENING = """\
id: bench-screen
name: Benchmark, screening
trigger:
  type: kafka
  topic: {topic}
  condition: fields.flow_temp_c > 1000
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

# S2: every key has an instance waiting on a timer, so each reading refreshes it.
REFRESH = SCREENING.replace("bench-screen", "bench-refresh").replace("Benchmark, screening", "Benchmark, refresh").replace(
    "fields.flow_temp_c > 1000", "fields.flow_temp_c > 0"
)

# S3: each hot reading starts an instance that publishes to MQTT at once.
REACTION = """\
id: bench-react
name: Benchmark, reaction
trigger:
  type: kafka
  topic: {topic}
  condition: fields.flow_temp_c > 25
  correlate: tags.device_id
variables:
  - name: device_id
    source: tags.device_id
  - name: sent_at
    source: sent_at
activities:
  - id: start
    type: start
  - id: alarm
    type: service
    action: mqtt_publish
    config:
      topic: bench/react/${{device_id}}
      payload:
        sent_at: ${{sent_at}}
      qos: 1
  - id: end
    type: end
"""


def reading(number: int, device: str, temperature: float) -> bytes:
    """One heat-pump reading, stamped with the time it is made."""
    document = {"measurement": "heatpump", "tags": {"device_id": device}, "fields": {"flow_temp_c": temperature}, "sent_at": time.time()}
    return orjson.dumps(document)


def produce(bootstrap: str, topic: str, values: Callable[[int], bytes], count: int) -> None:
    """Produce `count` messages as fast as the broker takes them."""
    sink = producer(bootstrap)
    for number in range(count):
        _produce(sink, topic, values(number))
    if sink.flush(60):
        raise TimeoutError(f"messages to {topic} were not all delivered within 60 s")


def raw_rates(bootstrap: str, topic: str, count: int, batch_size: int, threshold: float, runs: int = 3) -> list[float]:
    """The raw consume, decode and compare of the topic, `runs` times: the limit is the best of them.

    One run alone is not the machine's limit: Tansu now and then serves a consumer at a
    fifth of its usual rate for a whole run (seen here: 175,000 against 1,000,000 msg/s).
    """
    return [consume_rate(bootstrap, topic, count, batch_size, threshold=threshold) for _ in range(runs)]


class CommittedOffsets:
    """Watches a consumer group's committed offsets on one topic."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
        self.partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})

    def total(self) -> int:
        """Messages committed so far, over every partition."""
        return sum(max(p.offset, 0) for p in self.consumer.committed(self.partitions, timeout=10))

    def rate(self, count: int, timeout: float) -> float:
        """Messages per second from the first committed offset until `count` are committed."""
        deadline = time.monotonic() + timeout
        first = (0, 0.0)
        while (done := self.total()) < count:
            if done and not first[0]:
                first = (done, time.perf_counter())
            if time.monotonic() > deadline:
                raise TimeoutError(f"the engine committed {done:,} of {count:,} offsets within {timeout:.0f} s")
            time.sleep(0.05)
        if not first[0]:  # all of it landed between two looks: too small to time
            return 0.0
        return (count - first[0]) / (time.perf_counter() - first[1])

    def close(self) -> None:
        self.consumer.close()


def screening(bootstrap: str, group: str, folder: Path, topic: str, count: int, batch_size: int) -> dict[str, Any]:
    """S1: `count` readings of 1,000 devices, none meeting the condition."""
    produce(bootstrap, topic, lambda n: reading(n, f"s-{n % 1000}", 20.0 + (n % 50) / 10), count)
    raws = raw_rates(bootstrap, topic, count, batch_size, threshold=1000.0)
    watch = CommittedOffsets(bootstrap, group, topic)
    try:
        (folder / "bench-screen.yaml").write_text(SCREENING.format(topic=topic), encoding="utf-8")
        rate = watch.rate(count, 300)
    finally:
        watch.close()
    return {"rate": rate, "raw": max(raws), "raw_runs": raws, "count": count}


def refresh(bootstrap: str, group: str, folder: Path, topic: str, database_url: str, keys: int, count: int, batch_size: int) -> dict[str, Any]:
    """S2: `keys` instances start and wait, then `count` readings refresh them."""
    produce(bootstrap, topic, lambda n: reading(n, f"r-{n % keys}", 20.0 + (n % 50) / 10), keys + count)
    raws = raw_rates(bootstrap, topic, keys + count, batch_size, threshold=0.0)
    watch = CommittedOffsets(bootstrap, group, topic)
    try:
        (folder / "bench-refresh.yaml").write_text(REFRESH.format(topic=topic), encoding="utf-8")
        rate = watch.rate(keys + count, 300)
    finally:
        watch.close()
    rows = execute(database_url, "SELECT count(*) FROM process_history h JOIN process_instances i ON i.id = h.instance_id "
                                 "WHERE i.definition_id = 'bench-refresh' AND h.event_type = 'variable_changed'")[0][0]
    return {"rate": rate, "raw": max(raws), "raw_runs": raws, "count": count, "keys": keys, "history_rows": int(rows), "rows_per_refresh": int(rows) / count}


def rows_per_refresh_at_one_per_second(keys: int = 20, seconds: int = 600, interval: float = 60.0) -> float:
    """History rows per refresh at 1 message/s per key, on the simulated clock of a replay.

    The backlog of S2 arrives faster than any interval, so its row count says little
    about a live plant: this runs the same definition through the engine's own
    dispatcher on the in-memory store, one reading per key per second for ten minutes.
    """
    from process_engine.adapters.definitions.yaml_loader import load_text
    from process_engine.adapters.memory.store import MemoryInstanceStore
    from process_engine.ports import IncomingMessage, InstanceQuery, MessageCoordinate
    from process_engine.runtime.messages import MessageDispatcher
    from process_engine.runtime.registry import DefinitionRegistry

    store = MemoryInstanceStore()
    registry = DefinitionRegistry(store)
    registry.activate([load_text(REFRESH.format(topic="rate"))])
    clock = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    dispatcher = MessageDispatcher(store, registry, clock=lambda: clock[0], refresh_interval=interval)
    offset = 0
    for second in range(seconds):
        clock[0] += timedelta(seconds=1)
        batch = []
        for key in range(keys):
            value = orjson.dumps({"tags": {"device_id": f"k-{key}"}, "fields": {"flow_temp_c": 20.0 + (second % 50) / 10}})
            batch.append(IncomingMessage(MessageCoordinate("rate", 0, offset), value))
            offset += 1
        dispatcher.handle_batch(batch)
    instances = store.find_instances(InstanceQuery(definition_id="bench-refresh", limit=keys))
    assert len(instances) == keys, "every key should have one waiting instance"
    rows = sum(1 for i in instances for entry in store.history(i.id) if entry.event_type == "variable_changed")
    return rows / (keys * (seconds - 1))


class MqttReceipts:
    """Subscribes to the reaction topic and keeps (sent_at, received) pairs."""

    def __init__(self, url: str):
        import paho.mqtt.client as mqtt

        from process_engine.adapters.mqtt.publisher import MqttSettings

        target = MqttSettings.from_url(url)
        self.received: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}")
        self.client.on_connect = lambda client, *_: client.subscribe("bench/react/#", qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._message
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise TimeoutError("the benchmark's MQTT subscription was not acknowledged within 10 s")

    def _message(self, _client: Any, _userdata: Any, message: Any) -> None:
        now = time.time()
        sent = orjson.loads(message.payload)["sent_at"]
        with self.lock:
            self.received.append((sent, now))

    def wait(self, count: int, timeout: float) -> list[tuple[float, float]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.received)} of {count} MQTT publishes arrived within {timeout:.0f} s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def reaction(bootstrap: str, mqtt_url: str, database_url: str, workdir: Path, rates: tuple[float, ...], seconds: float,
             synchronous_commit: str) -> dict[str, Any]:
    """S3: hot readings at each paced rate; Kafka produce to MQTT receipt, per message.

    An engine of its own, with only this definition, so nothing else shares the
    machine, and with the database's `synchronous_commit` set as given.
    """
    suffix = uuid.uuid4().hex[:6]
    topic = create_topic(bootstrap, f"bench-react-{synchronous_commit}-{suffix}", 4)
    folder = workdir / f"react-{synchronous_commit}"
    folder.mkdir()
    (folder / "bench-react.yaml").write_text(REACTION.format(topic=topic), encoding="utf-8")
    separator = "&" if "?" in database_url else "?"
    environ = {
        "DATABASE_URL": f"{database_url}{separator}options=-c%20synchronous_commit%3D{synchronous_commit}",
        "REDPANDA_BROKERS": bootstrap, "MQTT_URL": mqtt_url, "PROCESS_ENGINE_GROUP_ID": f"bench-react-{suffix}",
        "PROCESS_DEFINITIONS_PATH": str(folder), "PROCESS_ENGINE_HTTP_ADDR": "127.0.0.1:0", "LOG_LEVEL": "WARNING",
    }
    receipts = MqttReceipts(mqtt_url)
    engine = EngineProcess(environ, workdir / f"engine-react-{synchronous_commit}.log")
    try:
        engine.wait_ready()
        receipts.wait(produce_paced(bootstrap, topic, 20, 1.0, "warm-"), 60)
        result: dict[str, Any] = {}
        for rate in rates:
            time.sleep(1.0)
            before = len(receipts.received)
            sent = produce_paced(bootstrap, topic, rate, seconds, f"react-{rate:.0f}-")
            pairs = receipts.wait(before + sent, 60)[before:]
            result[f"{rate:.0f}"] = [(received - sent_at) * 1000 for sent_at, received in pairs]
        engine.stop()
        return result
    finally:
        engine.kill()
        receipts.close()


def produce_paced(bootstrap: str, topic: str, rate: float, seconds: float, prefix: str) -> int:
    """Hot readings at `rate` per second for `seconds`, each from a device of its own."""
    sink = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})  # no batching delay in the figure
    sink.poll(0)
    began = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - began) < seconds:
        while sent < int(elapsed * rate):
            _produce(sink, topic, reading(sent, f"{prefix}{sent}", 30.0))
            sink.poll(0)  # one message is its own batch at these rates: send it now
            sent += 1
        time.sleep(0.0005)
    sink.flush(30)
    return sent
