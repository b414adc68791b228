"""The trigger consumer: batches from Kafka into the dispatcher, offsets committed after the database.

Per batch: `consume(num_messages=...)`, one database transaction through the
dispatcher, then an offset commit (not waited for; a synchronous one goes before
partitions move or the consumer closes). Batches are pipelined: while one
batch's transaction commits on a thread of its own, the next batch is worked through
on top of what that transaction writes, so Python and PostgreSQL work at the same
time (a batch with nothing to write is done on the spot). If a transaction fails, the batch built on it is thrown away and both are
handled again one after the other, the careful way. When the database is unreachable
the assignment is paused (the consumer keeps polling so it stays in its group), the
batch in hand is retried with backoff, and no offset moves until it commits.

Fault injection (tests only): with PROCESS_ENGINE_CRASH_AFTER_DB_COMMIT=1 in the
environment the process exits (code 70, no cleanup) right after its first batch is
committed in the database and before the offsets are committed: the worst moment to
crash, which the trigger ledger must make harmless. Never set it in production.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from process_engine.domain.errors import StoreUnavailable
from process_engine.ports import IncomingBatch, IncomingMessage, MessageCoordinate
from process_engine.runtime.dispatcher import BatchResult, Dispatcher, PreparedBatch
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.runtime.trace_context import checked_traceparent, checked_tracestate

ERROR_REPEAT_SECONDS = 30.0
log = logging.getLogger("process_engine.consumer")
CRASH_AFTER_DB_COMMIT_ENV = "PROCESS_ENGINE_CRASH_AFTER_DB_COMMIT"
CRASH_EXIT_CODE = 70


@dataclass
class ConsumerSettings:
    """How to reach the cluster and how to consume."""

    bootstrap_servers: str
    group_id: str = "process-engine"
    batch_size: int = 500
    poll_timeout: float = 0.2
    security: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    setting: str = "REDPANDA_BROKERS"  # named in errors: where the user fixes the address

    def librdkafka(self) -> dict[str, Any]:
        """The consumer configuration."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # Fast group joins and quick discovery of topics created after start.
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1500,
            "topic.metadata.refresh.interval.ms": 5000,
            "allow.auto.create.topics": True,
            "enable.partition.eof": False,
            "reconnect.backoff.ms": 200,
            "reconnect.backoff.max.ms": 10000,
            # A broker may hold a fetch this long before answering, however few bytes are
            # waiting (Tansu does, and the default 500 ms put p50 latency above 100 ms).
            # 10 ms, not 20: S3's p99 at 200 msg/s went from 26-29 to 17 ms, for 1.5 % more
            # of a core on an idle Tansu (a broker that answers as data arrives, as
            # Redpanda does, only sees more idle fetches). Not 5: 20 msg/s gained 2 ms of
            # p99, but at 200 msg/s the busier broker took p99 from 18-23 to 39-44 ms.
            "fetch.wait.max.ms": 10,
            # Once a partition's local queue is past queued.min.messages, librdkafka waits this
            # long before fetching it again (default 1 s): a consumer that empties the queue in
            # a tenth of that then idles. With a backlog the engine read 150,000-180,000 msg/s
            # that way; at 10 ms, 800,000-1,100,000 raw on the same topic.
            "fetch.queue.backoff.ms": 10,
        }
        config.update(self.security)
        config.update(self.extra)
        return config


@dataclass
class _InFlight:
    """A prepared batch whose transaction is committing on the committer thread (or, writing nothing, is done already)."""

    prepared: PreparedBatch
    messages: list[Message]
    commit: Future[BatchResult]
    offsets: dict[tuple[str, int], int]  # the batch's last offset per partition


_tuple = tuple.__new__  # builds a NamedTuple without its Python-level __new__: a batch makes two per message


def to_incoming(message: Message) -> IncomingMessage:
    """A confluent-kafka message as the dispatcher sees it."""
    _, timestamp = message.timestamp()
    coordinate = _tuple(MessageCoordinate, (message.topic(), message.partition(), message.offset()))
    headers = message.headers()  # None when the message has none: the common case costs one call
    traced = trace_headers(headers) if headers else (None, None)
    return _tuple(IncomingMessage, (coordinate, message.value(), message.key(), timestamp if timestamp > 0 else None, *traced))


def incoming_batch(messages: list[Message]) -> IncomingBatch:
    """A batch from one poll as the dispatcher takes it: columns read in C, each IncomingMessage built when asked for."""
    return IncomingBatch(list(map(Message.topic, messages)), list(map(Message.value, messages)), list(map(Message.key, messages)),
                         lambda index: to_incoming(messages[index]))


def last_offsets(messages: list[Message], topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """The last offset of each partition in a batch from one poll (a partition's messages come in order, so the last one written wins)."""
    offsets = map(Message.offset, messages)
    if topics and topics.count(topics[0]) == len(topics):  # one topic, the common case: no key tuple per message
        topic = topics[0]
        return {(topic, partition): offset for partition, offset in dict(zip(map(Message.partition, messages), offsets)).items()}
    return dict(zip(zip(topics, map(Message.partition, messages)), offsets))


def trace_headers(headers: list[tuple[str, bytes | None]]) -> tuple[str | None, str | None]:
    """The W3C `traceparent` and `tracestate` among a message's headers, checked (None where absent or invalid)."""
    parent = state = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == "traceparent" and value:
            parent = checked_traceparent(value.decode("ascii", "replace").strip())
        elif lowered == "tracestate" and value:
            state = checked_tracestate(value.decode("ascii", "replace").strip())
    return parent, state if parent is not None else None


class TriggerConsumer:
    """Consumes every trigger topic of the active definitions until stopped."""

    def __init__(
        self,
        settings: ConsumerSettings,
        dispatcher: Dispatcher,
        registry: DefinitionRegistry,
        on_batch: Callable[[BatchResult, int], None] | None = None,
        max_backoff: float = 10.0,
    ):
        self.settings = settings
        self.dispatcher = dispatcher
        self.registry = registry
        self.on_batch = on_batch
        self.max_backoff = max_backoff
        self.consumer: Consumer | None = None
        self.subscribed: frozenset[str] = frozenset()
        self.broker_error: str | None = None
        self._error_said: float | None = None
        self._errors_unsaid = 0
        self.assigned: list[TopicPartition] = []
        self.batches = 0
        self._in_flight: _InFlight | None = None
        self._latest_offsets: dict[tuple[str, int], int] = {}  # committed without waiting
        # The trigger ledger's highest offset per partition, read once per assignment:
        # messages above it are new, and their batch skips the ledger lookup.
        self._marks: dict[tuple[str, int], int] = {}
        self._committer: ThreadPoolExecutor | None = None
        # The fault-injection hook of the module docstring; read once, here, for tests only.
        self.crash_after_db_commit = os.environ.get(CRASH_AFTER_DB_COMMIT_ENV) == "1"

    def _error(self, error: KafkaError) -> None:
        # librdkafka retries on its own, reporting every failed attempt: remember the last
        # error for readiness, and say it once per ERROR_REPEAT_SECONDS, not per attempt.
        self.broker_error = str(error)
        now = time.monotonic()
        if self._error_said is not None and now - self._error_said < ERROR_REPEAT_SECONDS:
            self._errors_unsaid += 1
            return
        repeated = f" ({self._errors_unsaid} more since the last report)" if self._errors_unsaid else ""
        text = error.str() if isinstance(error, KafkaError) else str(error)
        log.warning("kafka: %s%s; check %s=%s and that the broker runs (retrying)", " ".join(text.split()),
                    repeated, self.settings.setting, self.settings.bootstrap_servers)
        self._error_said, self._errors_unsaid = now, 0

    def _open(self) -> Consumer:
        config = self.settings.librdkafka()
        config["error_cb"] = self._error
        config["on_commit"] = self._offsets_committed
        consumer = Consumer(config, logger=logging.getLogger("process_engine.librdkafka"))
        return consumer

    def _resubscribe(self, consumer: Consumer) -> None:
        topics = frozenset(self.registry.topics())
        if topics == self.subscribed:
            return
        if topics:
            consumer.subscribe(sorted(topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
            log.info("subscribed to %s", ", ".join(sorted(topics)))
        else:
            consumer.unsubscribe()
            log.info("no trigger topics: nothing to consume")
        self.subscribed = topics

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)
        self._marks = {}  # another consumer may have written to the ledger meanwhile
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = []
        log.info("revoked %d partition(s)", len(partitions))
        flight, self._in_flight = self._in_flight, None
        if flight is not None:
            try:  # commit its offsets while the partitions are still ours
                self._committed(consumer, flight.messages, flight.commit.result(), flight.offsets)
            except Exception as error:  # nothing of it was committed: the next owner gets it
                log.warning("batch of %d message(s) not committed before a rebalance (%s); it will be redelivered", len(flight.messages), error)
        self._flush_offsets(consumer)

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; the batch in hand is committed before leaving the group."""
        consumer = self.consumer = self._open()
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="batch-commit")
        try:
            while not stop.is_set():
                self._resubscribe(consumer)
                if not self.subscribed:
                    self._land(consumer, stop)
                    stop.wait(1.0)
                    continue
                # With a batch in flight, look without waiting: if nothing is there, land it
                # at once rather than leave its offsets uncommitted for a poll timeout.
                batch = self._next_batch(consumer, wait=self._in_flight is None)
                good = [m for m in batch if m.error() is None]
                if len(good) < len(batch):
                    good = [m for m in batch if self._usable(m)]
                if good:
                    self._pipeline(consumer, good, stop)
                else:
                    self._land(consumer, stop)  # idle: commit the offsets of the batch in flight now
        finally:
            try:
                self._land(consumer, stop)
                self._flush_offsets(consumer)
            finally:
                self._committer.shutdown(wait=True)
                consumer.close()  # leaves the group so partitions move at once
                self.consumer = None

    def _pipeline(self, consumer: Consumer, messages: list[Message], stop: threading.Event) -> None:
        """Work through a batch while the one before commits, then hand it to the committer."""
        flight, self._in_flight = self._in_flight, None
        offsets: dict[tuple[str, int], int] = {}
        try:
            batch = incoming_batch(messages)
            offsets = last_offsets(messages, batch.topics)
            prepared: PreparedBatch | None = self.dispatcher.prepare_batch(
                batch, flight.prepared if flight is not None else None, self._ledger_marks(offsets)
            )
        except Exception as error:  # a read failed, or worse: finish the batch before, then go carefully
            log.debug("preparing a batch failed (%s); handling it on its own", error)
            prepared = None
        landed = self._wait(flight)
        if prepared is not None and landed is not False:
            assert self._committer is not None
            if prepared.unit.writes_nothing():  # no IO to overlap: spare the hand-off to the committer thread
                commit: Future[BatchResult] = Future()
                try:
                    commit.set_result(self.dispatcher.commit_prepared(prepared))
                except Exception as error:
                    commit.set_exception(error)
            else:
                commit = self._committer.submit(self.dispatcher.commit_prepared, prepared)
            self._in_flight = _InFlight(prepared, messages, commit, offsets)
        if flight is not None:
            self._settle(consumer, flight, landed, stop)  # offsets of the batch before, while this one commits
        if self._in_flight is None:  # not prepared, or built on a transaction that did not commit
            self._process(consumer, messages, stop)

    def _ledger_marks(self, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """The ledger's marks for the partitions of a batch (`offsets`: their last offsets); read from the store the first time.

        A partition whose batch went past its mark gets the mark -1 for the batches
        after it, whose messages all come later: none of them can be in the ledger.
        """
        marks = self._marks
        unknown = offsets.keys() - marks.keys()
        if unknown:
            found = self.dispatcher.ledger_marks(sorted(unknown))
            marks.update({partition: found.get(partition, -1) for partition in unknown})
        now = dict(marks)
        for partition, offset in offsets.items():
            if offset > marks[partition]:
                marks[partition] = -1
        return now

    def _land(self, consumer: Consumer, stop: threading.Event) -> None:
        """Wait for the batch in flight and commit its offsets (or redo it if it failed)."""
        flight, self._in_flight = self._in_flight, None
        if flight is not None:
            self._settle(consumer, flight, self._wait(flight), stop)

    @staticmethod
    def _wait(flight: _InFlight | None) -> BatchResult | bool:
        """The committed batch's result; False if its transaction failed (nothing of it was written)."""
        if flight is None:
            return True
        try:
            return flight.commit.result()
        except Exception as error:  # nothing of it was written; the careful way isolates the cause
            log.info("batch of %d message(s) failed to commit (%s); handling it again", len(flight.messages), error)
            return False

    def _settle(self, consumer: Consumer, flight: _InFlight, landed: BatchResult | bool, stop: threading.Event) -> None:
        if isinstance(landed, BatchResult):
            self._committed(consumer, flight.messages, landed, flight.offsets)
        else:  # a conflict, a refused message, an outage: the careful way sorts it out
            self._process(consumer, flight.messages, stop)

    def _next_batch(self, consumer: Consumer, wait: bool = True) -> list[Message]:
        """Everything fetched so far, up to a batch, as soon as there is anything.

        Waiting for a full batch would add latency at low rates; under load the fetch
        queue holds a full batch anyway. With `wait` false, an empty queue gives [] at once.
        """
        batch = consumer.consume(num_messages=self.settings.batch_size, timeout=0)
        if batch or not wait:
            return batch
        first = consumer.poll(self.settings.poll_timeout)
        if first is None:
            return []
        return [first, *consumer.consume(num_messages=self.settings.batch_size - 1, timeout=0)]

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            self._error(error)
        return False

    def _process(self, consumer: Consumer, messages: list[Message], stop: threading.Event) -> None:
        delay = 0.2
        paused = False
        while True:
            try:
                result = self.dispatcher.handle_batch([to_incoming(m) for m in messages])
                break
            except StoreUnavailable as error:
                consumer.pause(consumer.assignment())
                paused = True
                log.error("database unavailable, holding %d message(s): %s", len(messages), error)
                if stop.wait(delay):
                    return  # stopping with nothing committed: the batch is redelivered
                messages += self._poll_while_held(consumer)
                delay = min(delay * 2, self.max_backoff)
        if paused:
            consumer.resume(consumer.assignment())
        self._committed(consumer, messages, result)

    def _committed(self, consumer: Consumer, messages: list[Message], result: BatchResult,
                   offsets: dict[tuple[str, int], int] | None = None) -> None:
        """The database has the batch: commit its offsets (its last offset per partition, if known) and report it."""
        if self.crash_after_db_commit:
            log.error("fault injection (%s=1): exiting after the database commit, before the offset commit", CRASH_AFTER_DB_COMMIT_ENV)
            os._exit(CRASH_EXIT_CODE)
        self._commit(consumer, messages, offsets)
        self.batches += 1
        log.debug(
            "batch of %d message(s) committed: %d started, %d refreshed, %d dead-lettered, %d duplicate(s)",
            len(messages), len(result.started), result.refreshed, result.dead_lettered, result.duplicates,
        )
        if self.on_batch is not None:
            self.on_batch(result, len(messages))

    def _poll_while_held(self, consumer: Consumer) -> list[Message]:
        """Serve rebalance callbacks while a batch is held; keep whatever arrives.

        A rebalance assigns partitions unpaused, so this poll may return messages.
        They join the held batch: dropped, the position would already be past them
        and the next offset commit would skip them for good.
        """
        arrived = [m for m in consumer.consume(num_messages=self.settings.batch_size, timeout=0) if self._usable(m)]
        consumer.pause(consumer.assignment())  # partitions assigned by a rebalance just now
        return arrived

    def _commit(self, consumer: Consumer, messages: list[Message], last: dict[tuple[str, int], int] | None = None) -> None:
        """Commit a batch's offsets without waiting for the broker's answer.

        The database already has the batch and the trigger ledger makes a redelivery
        harmless, so the consumer need not wait a round trip per batch; `_flush_offsets`
        commits synchronously before partitions move or the consumer closes.
        """
        if last is None:
            last = {}
            for message in messages:
                key = (message.topic(), message.partition())
                last[key] = max(last.get(key, -1), message.offset())
        offsets = [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]
        for offset in offsets:
            self._latest_offsets[(offset.topic, offset.partition)] = offset.offset
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as error:
            self._offsets_committed(error.args[0], offsets)

    def _flush_offsets(self, consumer: Consumer) -> None:
        """Commit the latest offsets and wait for the broker: asynchronous ones may still be on their way."""
        latest, self._latest_offsets = self._latest_offsets, {}
        if not latest:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in latest.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            self._offsets_committed(error.args[0], offsets)

    def _offsets_committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's `on_commit` callback, and where a failed commit call reports too."""
        if error is not None:
            # After a rebalance the partition may be someone else's: the ledger makes
            # the redelivery harmless, so this is worth a warning, not a crash.
            log.warning("offset commit failed (%s); the messages will be redelivered and skipped", error)
