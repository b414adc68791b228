"""The machine's own limits (B1, B2) and the seed's naive design (B4), on the same servers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.workload import telemetry
from process_engine.adapters.actions import builtin_registry
from process_engine.adapters.definitions.yaml_loader import load_file
from process_engine.adapters.kafka.consumer import ConsumerSettings
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.adapters.postgres.store import PostgresInstanceStore
from process_engine.app import INLINE_ACTIONS, definition_extensions, inline_runner
from process_engine.ports import IncomingMessage, MessageCoordinate
from process_engine.runtime.commit_plan import CommitPlan, plan_commit
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry


def register(database_url: str, definition_file: Path) -> None:
    """Store the definition (version 1), as the engine would on start."""
    with PostgresInstanceStore.connect(database_url) as store:
        DefinitionRegistry(store, definition_extensions()).activate([load_file(definition_file, definition_extensions())])


def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
    return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions]


def _consumer(bootstrap: str, topic: str, batch_size: int) -> Consumer:
    """A consumer with the engine's settings, assigned to the start of every partition."""
    config = ConsumerSettings(bootstrap, f"raw-{uuid.uuid4().hex[:8]}", batch_size).librdkafka()
    consumer = Consumer(config)
    consumer.assign(_partitions(bootstrap, topic))
    return consumer


def consume_rate(bootstrap: str, topic: str, count: int, batch_size: int, threshold: float | None = None) -> float:
    """B1: messages per second that confluent-kafka hands over with no processing at all.

    With `threshold`, each message is also decoded and its `fields.flow_temp_c`
    compared with it in plain Python: what screening (S1, S2) costs without the engine.
    """
    consumer = _consumer(bootstrap, topic, batch_size)
    try:
        total = first = hits = 0
        began = 0.0
        while total < count:
            batch = consumer.consume(num_messages=batch_size, timeout=1.0)
            if batch and not total:
                began, first = time.perf_counter(), len(batch)  # measured from the first batch in hand
            good = [message for message in batch if message.error() is None]
            if threshold is not None:
                hits += sum(orjson.loads(message.value())["fields"]["flow_temp_c"] > threshold for message in good)
            total += len(good)
        return (total - first) / (time.perf_counter() - began)
    finally:
        consumer.close()


# -- B2: the engine's rows, written as fast as PostgreSQL takes them -------------------


class _CapturingStore(MemoryInstanceStore):
    """Keeps the last batch the dispatcher committed."""

    captured: tuple[Any, Any] | None = None

    def prepare_commit(self, steps, ledger=(), dead_letters=(), holds=()):  # type: ignore[override]
        self.captured = (list(steps), list(ledger))
        return super().prepare_commit(steps, ledger, dead_letters, holds)


def engine_plan(definition_file: Path, topic: str, batch_size: int) -> CommitPlan:
    """The rows the engine writes for one batch of the five-activity process."""
    store = _CapturingStore()
    registry = DefinitionRegistry(store, definition_extensions())
    registry.activate([load_file(definition_file, definition_extensions())])
    actions = builtin_registry()
    inline = {name: inline_runner(actions, name) for name in INLINE_ACTIONS}
    dispatcher = Dispatcher(store, registry, inline_actions=inline)
    messages = [IncomingMessage(MessageCoordinate(topic, 0, n), telemetry(n)) for n in range(batch_size)]
    dispatcher.handle_batch(messages)
    assert store.captured is not None
    steps, ledger = store.captured
    return plan_commit(steps, ledger)


INSTANCE_COLUMNS = ("id", "definition_id", "definition_version", "status", "variables", "state",
                    "current_activity", "correlation_key", "error", "started_at", "completed_at", "version")
INSTANCE_TYPES = ("uuid", "text", "int4", "text", "bytea", "bytea", "text", "text", "text",
                  "timestamptz", "timestamptz", "int8")
HISTORY_COLUMNS = ("id", "instance_id", "activity_id", "event_type", "timestamp", "data", "message",
                   "correlation_id", "causation_id")
HISTORY_TYPES = ("uuid", "uuid", "text", "text", "timestamptz", "bytea", "text", "text", "text")
LEDGER_COLUMNS = ("topic", "partition", "offset", "definition_id", "instance_id")
LEDGER_TYPES = ("text", "int4", "int8", "text", "uuid")


def _jsonb(text: str | None) -> bytes | None:
    """jsonb's binary COPY form: a version byte, then the text (set as bytea on the client)."""
    return None if text is None else b"\x01" + text.encode()


@dataclass
class RowBatch:
    """One batch's rows as COPY tuples."""

    instances: list[tuple]
    history: list[tuple]
    ledger: list[tuple]


def copy_batches(plan: CommitPlan, batches: int) -> list[RowBatch]:
    """`batches` copies of the plan's rows with fresh ids and offsets (made before timing)."""
    made = []
    for number in range(batches):
        ids = {row.id: uuid.uuid4() for row in plan.inserts}
        texts = {old: str(new) for old, new in ids.items()}
        instances = [
            (ids[r.id], r.definition_id, r.definition_version, r.status, _jsonb(r.variables), _jsonb(r.state),
             r.current_activity, r.correlation_key, r.error, r.started_at, r.completed_at, r.new_version)
            for r in plan.inserts
        ]
        history = [
            (uuid.uuid4(), ids[r.instance_id], r.activity_id, r.event_type, datetime.fromisoformat(r.timestamp),
             _jsonb(_swap(r.data, r.instance_id, texts)), r.message, texts[r.instance_id], r.causation_id)
            for r in plan.history
        ]
        ledger = [
            (r.topic, r.partition, r.offset + number * len(plan.ledger), r.definition_id, ids[r.instance_id])
            for r in plan.ledger
        ]
        made.append(RowBatch(instances, history, ledger))
    return made


def _swap(text: str | None, old: str, texts: dict[str, str]) -> str | None:
    return text.replace(old, texts[old]) if text else text


def _copy(cursor: psycopg.Cursor, table: str, columns: Sequence[str], types: Sequence[str], rows: list[tuple]) -> None:
    names = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def write_rate(database_url: str, batches: list[RowBatch]) -> tuple[float, int]:
    """B2: instances per second and rows per instance, one transaction of binary COPYs per batch."""
    with psycopg.connect(database_url) as conn:
        cursor = conn.cursor()
        began = time.perf_counter()
        for batch in batches:
            _copy(cursor, "process_instances", INSTANCE_COLUMNS, INSTANCE_TYPES, batch.instances)
            _copy(cursor, "process_history", HISTORY_COLUMNS, HISTORY_TYPES, batch.history)
            _copy(cursor, "trigger_ledger", LEDGER_COLUMNS, LEDGER_TYPES, batch.ledger)
            conn.commit()
        elapsed = time.perf_counter() - began
    instances = sum(len(b.instances) for b in batches)
    rows = sum(len(b.instances) + len(b.history) + len(b.ledger) for b in batches)
    return instances / elapsed, rows // instances


# -- B4: the seed's design, one autocommitted statement at a time -----------------------

# The five-activity process as the seed would write it: the same eight history rows.
NAIVE_STEPS = (
    ("start", ("started", "completed")),
    ("check_temp", ("completed",)),
    ("classify", ("completed",)),
    ("note", ("action_requested", "completed")),
    ("end", ("completed", "process_completed")),
)


def naive_rate(database_url: str, bootstrap: str, topic: str, seconds: float) -> tuple[float, int]:
    """B4: instances per second when each write is its own autocommitted statement.

    Like the seed's engine: per message, insert the instance, then per activity
    update it and insert its history rows one by one, then mark it completed.
    """
    consumer = _consumer(bootstrap, topic, 1)
    done = 0
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            began = time.perf_counter()
            while time.perf_counter() - began < seconds:
                message = consumer.poll(1.0)
                if message is None or message.error() is not None:
                    continue
                _naive_instance(conn, json.loads(message.value()))
                done += 1
            elapsed = time.perf_counter() - began
    finally:
        consumer.close()
    return done / elapsed, done


def _naive_instance(conn: psycopg.Connection, document: dict[str, Any]) -> None:
    instance_id = uuid.uuid4()
    variables = json.dumps({"device_id": document["tags"]["device_id"], "temperature": document["fields"]["flow_temp_c"]})
    conn.execute(
        "INSERT INTO process_instances (id, definition_id, definition_version, status, variables, current_activity)"
        " VALUES (%s, 'bench-five', 1, 'running', %s, 'start')",
        (instance_id, variables),
    )
    for activity, event_types in NAIVE_STEPS:
        conn.execute("UPDATE process_instances SET current_activity = %s WHERE id = %s", (activity, instance_id))
        for event_type in event_types:
            conn.execute(
                "INSERT INTO process_history (instance_id, activity_id, event_type, timestamp)"
                " VALUES (%s, %s, %s, %s)",
                (instance_id, activity, event_type, datetime.now(timezone.utc)),
            )
    conn.execute("UPDATE process_instances SET status = 'completed', completed_at = now() WHERE id = %s", (instance_id,))
