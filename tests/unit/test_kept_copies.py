"""Pipelined batches keep copies of the instances they read and left unchanged, checked by version.

The batch after reads back in full only instances whose version moved on: another
writer's change or end of an instance is seen as if every instance were re-read.
"""

from __future__ import annotations

from collections.abc import Sequence

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.domain.instance import InstanceState
from process_engine.engine import Cancel
from process_engine.runtime.messages import MessageDispatcher
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.runtime.unit_of_work import UnitOfWork
from tests.unit.hot_watch import WATCH, readings


class CountingStore(MemoryInstanceStore):
    """The memory store, counting how instances are read back."""

    def __init__(self) -> None:
        super().__init__()
        self.full_reads: list[list[tuple[str, str]]] = []
        self.version_reads: list[list[tuple[str, str]]] = []
        self.loads: list[list[str]] = []

    def active_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[InstanceState]]:
        self.full_reads.append(list(keys))
        return super().active_by_keys(keys)

    def active_versions_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[str, int]]]:
        self.version_reads.append(list(keys))
        return {key: [(i.id, i.version) for i in found] for key, found in MemoryInstanceStore.active_by_keys(self, keys).items()}

    def load_many(self, instance_ids: Sequence[str]) -> dict[str, InstanceState]:
        self.loads.append(sorted(instance_ids))
        return super().load_many(instance_ids)


def make() -> tuple[MessageDispatcher, CountingStore, DefinitionRegistry]:
    store = CountingStore()
    registry = DefinitionRegistry(store)
    registry.activate([load_text(WATCH)])
    return MessageDispatcher(store, registry), store, registry


def test_an_unchanged_instance_is_not_read_back_by_the_batch_after() -> None:
    dispatcher, store, _ = make()
    (started,) = dispatcher.handle_batch(readings(0, ("hp-1", 30.0))).started
    first = dispatcher.prepare_batch(readings(1, ("hp-1", 30.0)))  # repeats the value: changes nothing
    store.full_reads.clear()
    second = dispatcher.prepare_batch(readings(2, ("hp-1", 26.0)), after=first)
    dispatcher.commit_prepared(first)
    dispatcher.commit_prepared(second)
    assert store.full_reads == [] and store.version_reads == [[("hot-watch", "hp-1")]] and store.loads == []
    assert second.result.refreshed == 1
    assert store.load(started).variables["temperature"] == 26.0


def test_an_instance_another_writer_ended_between_batches_is_not_refreshed_a_new_one_starts() -> None:
    dispatcher, store, registry = make()
    (started,) = dispatcher.handle_batch(readings(0, ("hp-2", 30.0))).started
    first = dispatcher.prepare_batch(readings(1, ("hp-2", 30.0)))
    dispatcher.commit_prepared(first)
    other = UnitOfWork(store, registry, dispatcher.clock(), {})  # another replica, or the API, cancels it
    instance = other.load(started)
    other.apply(registry.get("hot-watch", instance.definition_version), instance, Cancel("by hand"), "api")
    other.commit()
    second = dispatcher.prepare_batch(readings(2, ("hp-2", 31.0)), after=first)
    dispatcher.commit_prepared(second)
    assert store.load(started).status == "cancelled"
    assert len(second.result.started) == 1 and second.result.refreshed == 0


def test_an_instance_another_writer_changed_is_read_back_and_written_on_its_new_version() -> None:
    dispatcher, store, registry = make()
    (started,) = dispatcher.handle_batch(readings(0, ("hp-3", 30.0))).started
    first = dispatcher.prepare_batch(readings(1, ("hp-3", 30.0)))
    dispatcher.commit_prepared(first)
    dispatcher.handle_batch(readings(2, ("hp-3", 28.0)))  # the same instance refreshed outside the pipeline
    store.loads.clear()
    second = dispatcher.prepare_batch(readings(3, ("hp-3", 27.0)), after=first)
    dispatcher.commit_prepared(second)  # a stale copy would conflict here
    assert store.loads == [[started]]
    assert store.load(started).variables["temperature"] == 27.0


def test_a_copy_carried_from_the_batch_before_is_kept_on_the_version_that_batch_wrote() -> None:
    dispatcher, store, _ = make()
    (started,) = dispatcher.handle_batch(readings(0, ("hp-4", 30.0))).started
    first = dispatcher.prepare_batch(readings(1, ("hp-4", 29.0)))  # changes it: carried to the next, unwritten yet
    second = dispatcher.prepare_batch(readings(2, ("hp-4", 29.0)), after=first)  # leaves it as the first made it
    dispatcher.commit_prepared(first)
    store.full_reads.clear()
    store.loads.clear()
    third = dispatcher.prepare_batch(readings(3, ("hp-4", 24.0)), after=second)
    dispatcher.commit_prepared(second)
    dispatcher.commit_prepared(third)  # on the version the first batch wrote: no conflict
    assert store.full_reads == [] and store.loads == [] and store.version_reads[-1] == [("hot-watch", "hp-4")]
    assert (store.load(started).variables["temperature"], store.load(started).version) == (24.0, 3)
