"""The consumer's hold-and-retry loop while the database is down, on a scripted consumer.

A real broker cannot be made to rebalance at an exact moment, so the consumer is
scripted: what matters is what `TriggerConsumer` does with what librdkafka hands it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from process_engine.adapters.kafka.consumer import ConsumerSettings, TriggerConsumer
from process_engine.domain.errors import StoreUnavailable
from process_engine.runtime.dispatcher import BatchResult


@dataclass
class FakeMessage:
    """The parts of confluent_kafka.Message the consumer reads."""

    _topic: str
    _partition: int
    _offset: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return b"{}"

    def key(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)

    def headers(self) -> None:  # confluent-kafka gives None for a message without headers
        return None

    def error(self) -> None:
        return None


class ScriptedConsumer:
    """Hands out scripted `consume()` results and records pauses and commits."""

    def __init__(self, later: list[list[FakeMessage]]):
        self.later = later
        self.paused: list[list[str]] = []
        self.committed: list[tuple[str, int, int]] = []

    def assignment(self) -> list[str]:
        return ["t[0]", "t[1]"]

    def pause(self, partitions) -> None:
        self.paused.append(list(partitions))

    def resume(self, partitions) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        return self.later.pop(0) if self.later else []

    def commit(self, offsets, asynchronous: bool) -> None:
        self.committed += [(tp.topic, tp.partition, tp.offset) for tp in offsets]


class FlakyDispatcher:
    """Raises StoreUnavailable `failures` times, then records what it was given."""

    def __init__(self, failures: int):
        self.failures = failures
        self.handled: list[tuple[int, int]] = []

    def handle_batch(self, messages) -> BatchResult:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("database unavailable (test)")
        self.handled += [(m.coordinate.partition, m.coordinate.offset) for m in messages]
        return BatchResult()


def test_a_message_handed_out_while_the_batch_is_held_is_processed_not_skipped() -> None:
    # While the batch waits for the database, a rebalance can assign a partition that
    # is not paused; the keep-alive consume() then returns its next message. Dropping
    # it would move the position past it, and the next commit would skip it for good.
    dispatcher = FlakyDispatcher(failures=2)
    consumer = TriggerConsumer(ConsumerSettings("127.0.0.1:9"), dispatcher, registry=None, max_backoff=0.01)
    scripted = ScriptedConsumer(later=[[FakeMessage("t", 1, 7)]])
    consumer._process(scripted, [FakeMessage("t", 0, 3)], threading.Event())
    assert sorted(dispatcher.handled) == [(0, 3), (1, 7)]
    assert sorted(scripted.committed) == [("t", 0, 4), ("t", 1, 8)]
    assert len(scripted.paused) >= 2  # paused again after each keep-alive poll, in case of a rebalance


class MarksDispatcher:
    """Answers the ledger's marks and counts how often it was asked."""

    def __init__(self, marks: dict[tuple[str, int], int]):
        self.marks, self.asked = marks, []

    def ledger_marks(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        self.asked.append(list(partitions))
        return {p: self.marks[p] for p in partitions if p in self.marks}


def test_a_partition_past_its_ledger_mark_needs_no_ledger_look_up_until_it_is_assigned_again() -> None:
    dispatcher = MarksDispatcher({("t", 0): 120, ("t", 1): 5})
    consumer = TriggerConsumer(ConsumerSettings("127.0.0.1:1"), dispatcher, registry=None)  # type: ignore[arg-type]
    # The batch reaching offset 100 of partition 0 and 9 of partition 1 is checked against the marks as read.
    assert consumer._ledger_marks({("t", 0): 100, ("t", 1): 9}) == {("t", 0): 120, ("t", 1): 5}
    # Partition 1 went past its mark: nothing after it can be a redelivery; partition 0 did not yet.
    assert consumer._ledger_marks({("t", 0): 130, ("t", 1): 20}) == {("t", 0): 120, ("t", 1): -1}
    assert consumer._ledger_marks({("t", 0): 140, ("t", 2): 3}) == {("t", 0): -1, ("t", 1): -1, ("t", 2): -1}
    assert dispatcher.asked == [[("t", 0), ("t", 1)], [("t", 2)]]
    consumer._on_assign(None, [])  # type: ignore[arg-type]  # another consumer may have written meanwhile: read again
    assert consumer._ledger_marks({("t", 1): 21}) == {("t", 1): 5}
    assert dispatcher.asked[-1] == [("t", 1)]
