"""A batch's conditions are evaluated while its active-key sync is out; then only the keys the index keeps are queried.

However long the sync takes, the batch must still refresh every active key and
query none of the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.adapters.memory.active_keys import MemoryActiveKeys
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.domain.instance import InstanceState
from process_engine.ports import MessageCoordinate
from process_engine.runtime.messages import MessageDispatcher
from process_engine.runtime.registry import DefinitionRegistry
from tests.unit.hot_watch import WATCH, readings


class CountingStore(MemoryInstanceStore):
    """The memory store, keeping the keys of each active-instance query and the thread that asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[list[tuple[str, str]], str]] = []
        self.ledger_delay = 0.0

    def seen_messages(self, coordinates: Sequence[MessageCoordinate]) -> set[MessageCoordinate]:  # read on the consumer's thread before the batch is decoded
        time.sleep(self.ledger_delay)
        return super().seen_messages(coordinates)

    def active_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[InstanceState]]:
        self.asked.append((list(keys), threading.current_thread().name))
        return super().active_by_keys(keys)


class SlowIndex(MemoryActiveKeys):
    """An index whose sync takes longer than decoding a small batch."""

    def __init__(self, store: MemoryInstanceStore, delay: float) -> None:
        super().__init__(store)
        self.delay = delay
        self.synced = 0

    def sync(self) -> Callable[[Sequence[tuple[str, str]]], list[tuple[str, str]]]:
        time.sleep(self.delay)
        self.synced += 1
        return super().sync()

    def possibly_active(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        found = MemoryInstanceStore.active_by_keys(self.store, pairs)  # the store's own answer, not counted as a batch's query
        return [pair for pair in pairs if pair in found]


def make(delay: float) -> tuple[MessageDispatcher, CountingStore, SlowIndex]:
    store = CountingStore()
    registry = DefinitionRegistry(store)
    registry.activate([load_text(WATCH)])
    index = SlowIndex(store, delay)
    return MessageDispatcher(store, registry, active_keys=index), store, index


def test_a_slow_sync_still_refreshes_the_active_key_and_queries_no_cold_one() -> None:
    dispatcher, store, index = make(delay=0.2)
    started = dispatcher.handle_batch(readings(0, ("hp-1", 30.0))).started
    assert len(started) == 1
    store.asked.clear()
    result = dispatcher.handle_batch(readings(1, ("hp-1", 22.5), ("cold-1", 20.0), ("cold-2", 21.0)))
    assert (result.started, result.refreshed, result.dead_lettered) == ([], 1, 0)
    assert store.load(started[0]).variables["temperature"] == 22.5
    # Asked on this thread, once the conditions were evaluated.
    assert store.asked == [([("hot-watch", "hp-1")], threading.current_thread().name)]
    assert index.synced == 2


def test_a_slow_sync_lets_a_hot_reading_of_a_cold_key_start_its_instance() -> None:
    dispatcher, store, _ = make(delay=0.2)
    result = dispatcher.handle_batch(readings(0, ("hp-2", 31.0), ("hp-2", 32.0), ("hp-3", 20.0)))
    assert len(result.started) == 1 and result.refreshed == 1  # the second reading refreshes the first's instance
    assert store.load(result.started[0]).variables["temperature"] == 32.0
    assert [keys for keys, _ in store.asked] == []  # the index ruled both keys out: nothing was active before


def test_a_quick_sync_queries_only_the_active_key_once_the_batch_is_screened() -> None:
    dispatcher, store, _ = make(delay=0.0)
    started = dispatcher.handle_batch(readings(0, ("hp-4", 30.0))).started
    store.asked.clear()
    store.ledger_delay = 0.2  # the instant sync is back before the batch's keys are known
    result = dispatcher.handle_batch(readings(1, ("hp-4", 24.0), ("cold-1", 20.0)))
    assert result.refreshed == 1
    assert store.load(started[0]).variables["temperature"] == 24.0
    assert store.asked == [([("hot-watch", "hp-4")], threading.current_thread().name)]
