"""The dispatcher with the active-key index on PostgreSQL: cold keys cost no query, no refresh is lost.

Two dispatchers on one database stand for two replicas: "theirs" starts an instance,
"ours" (with the index) gets the next reading of the same device at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.adapters.postgres import PostgresInstanceStore
from process_engine.adapters.postgres.active_keys import PostgresActiveKeys
from process_engine.domain.instance import InstanceState
from process_engine.ports import InstanceQuery
from process_engine.runtime.messages import MessageDispatcher
from process_engine.runtime.registry import DefinitionRegistry
from tests.unit.hot_watch import WATCH, readings

pytestmark = pytest.mark.integration



class CountingStore(PostgresInstanceStore):
    """The real store, keeping the keys each active-instance query asked for."""

    asked: list[list[tuple[str, str]]]

    def active_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[InstanceState]]:
        self.asked.append(list(keys))
        return super().active_by_keys(keys)


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[MessageDispatcher, MessageDispatcher, CountingStore]]:
    ours_store = CountingStore.connect(database_url, max_size=2)
    assert isinstance(ours_store, CountingStore)
    ours_store.asked = []
    theirs_store = PostgresInstanceStore.connect(database_url, max_size=2)
    index = PostgresActiveKeys.start(database_url)
    try:
        assert index.wait_ready(10)
        registries = [DefinitionRegistry(store) for store in (ours_store, theirs_store)]
        for registry in registries:
            registry.activate([load_text(WATCH)])
        ours = MessageDispatcher(ours_store, registries[0], active_keys=index)
        theirs = MessageDispatcher(theirs_store, registries[1])
        yield ours, theirs, ours_store
    finally:
        index.close()
        ours_store.close()
        theirs_store.close()


def test_cold_readings_of_keys_without_instances_query_nothing(replicas) -> None:
    ours, _, store = replicas
    result = ours.handle_batch(readings(0, *((f"cold-{n}", 20.0) for n in range(50))))
    assert (result.started, result.refreshed, result.dead_lettered) == ([], 0, 0)
    assert [keys for keys in store.asked if keys] == []


def test_a_reading_right_after_another_replica_started_the_instance_refreshes_it(replicas) -> None:
    ours, theirs, store = replicas
    started = theirs.handle_batch(readings(0, ("hp-1", 30.0))).started
    assert len(started) == 1
    result = ours.handle_batch(readings(1, ("hp-1", 22.5), ("cold", 20.0)))
    assert result.refreshed == 1 and result.started == []
    assert store.load(started[0]).variables["temperature"] == 22.5
    assert [keys for keys in store.asked if keys] == [[("hot-watch", "hp-1")]]  # the cold key was ruled out


def test_pipelined_batches_refresh_what_the_batch_before_started(replicas) -> None:
    ours, _, store = replicas
    first = ours.prepare_batch(readings(0, ("hp-2", 31.0)))
    second = ours.prepare_batch(readings(1, ("hp-2", 24.0)), after=first)  # built while the first commits
    ours.commit_prepared(first)
    ours.commit_prepared(second)
    third = ours.handle_batch(readings(2, ("hp-2", 23.0)))
    assert third.refreshed == 1
    (only,) = store.find_instances(InstanceQuery(definition_id="hot-watch"))
    assert only.variables["temperature"] == 23.0
