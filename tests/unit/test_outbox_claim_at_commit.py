"""The outbox takes the action rows a commit writes in that commit, up to its idle workers.

No claim round trip stands between a commit and its action: the worker reserves
slots before the commit, the store leases those rows in the same transaction, and the
worker starts them when the commit returns. What it has no slot for is claimed as before.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone

from process_engine.adapters.actions.outbox import OutboxWorker
from process_engine.adapters.actions.registry import ActionRegistry
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.engine import ActionSucceeded
from process_engine.ports import ActionClaim, Step
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry
from tests.unit.test_outbox_backpressure import wait_for
from tests.unit.walking import definition_from

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)

TWO_CALLS = """
id: two-calls
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: first, type: service, action: mqtt_publish, config: {topic: a, payload: x}}
  - {id: second, type: service, action: mqtt_publish, config: {topic: b, payload: y}}
  - {id: done, type: end}
"""


class Published:
    """Stands in for mqtt_publish: keeps the topics it was given."""

    name = "mqtt_publish"

    def __init__(self) -> None:
        self.topics: list[str] = []

    def run(self, config: dict, context: object) -> None:
        self.topics.append(config["topic"])


class CountingStore(MemoryInstanceStore):
    """Counts the claim round trips and the instances read."""

    def status(self, instance_id: str) -> str:
        return super().load(instance_id).status  # not counted

    def __init__(self) -> None:
        super().__init__(clock=lambda: T0)
        self.claims = 0
        self.loads = 0  # instances read back

    def claim_actions(self, now, limit, lease_seconds):
        self.claims += 1
        return super().claim_actions(now, limit, lease_seconds)

    def load(self, instance_id):
        self.loads += 1
        return super().load(instance_id)

    def load_many(self, instance_ids):
        self.loads += 1
        return super().load_many(instance_ids)


def make(workers: int = 4, idle_seconds: float = 30.0) -> tuple[CountingStore, Dispatcher, OutboxWorker, Published]:
    store = CountingStore()
    registry = DefinitionRegistry(store)
    registry.activate([definition_from(TWO_CALLS)])
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
    dispatcher = Dispatcher(store, registry, clock=lambda: T0, new_id=lambda: next(ids))
    published = Published()
    worker = OutboxWorker(store, dispatcher, ActionRegistry([published]), clock=lambda: T0, workers=workers, idle_seconds=idle_seconds)
    dispatcher.claimer = worker
    return store, dispatcher, worker, published


def test_a_reservation_is_bounded_by_idle_workers_and_given_back() -> None:
    _, _, worker, _ = make(workers=2)
    claim = worker.reserve(["a", "b", "c"])
    assert claim is not None and list(claim.keys) == ["a", "b"] and claim.lease_seconds == worker.lease_seconds
    assert worker.reserve(["d"]) is None  # both workers are spoken for until the commit returns
    assert worker.deliver_once() == 0  # and the claim loop counts them as busy too
    worker.claimed(claim, (), 0)  # the commit failed: nothing to start
    assert worker.reserve(["d"]) is not None
    worker.pool.shutdown(wait=True)


def test_no_reservation_while_recording_is_behind() -> None:
    _, _, worker, _ = make()
    worker.max_unrecorded = 0
    assert worker.reserve(["a"]) is None
    worker.pool.shutdown(wait=True)


@contextmanager
def running(worker: OutboxWorker, store: CountingStore) -> Iterator[None]:
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    try:
        wait_for(lambda: store.claims == 1)  # the loop's first look, before anything was committed
        yield
    finally:
        stop.set()
        worker.stop_waiting()
        runner.join(10)


def test_a_flow_of_two_actions_runs_without_a_single_claim_after_start() -> None:
    store, dispatcher, worker, published = make()
    with running(worker, store):
        state = dispatcher.start("two-calls", {})
        # The start's commit leased the first row; the first outcome's commit, the second.
        wait_for(lambda: store.status(state.id) == "completed")
        assert published.topics == ["a", "b"]
        assert store.claims == 1
        assert store.loads == 0  # each outcome worked on the copy its action was leased with


def test_rows_beyond_the_idle_workers_are_claimed_by_the_loop_it_wakes() -> None:
    store, dispatcher, worker, published = make(workers=1)
    with running(worker, store):
        states = [dispatcher.start("two-calls", {}) for _ in range(3)]
        wait_for(lambda: all(store.load(s.id).status == "completed" for s in states))
        assert sorted(published.topics) == ["a", "a", "a", "b", "b", "b"]
        assert store.claims > 1  # one worker could not take them all at commit


def test_stopping_waits_for_a_commit_that_reserved_workers_and_delivers_what_it_leased() -> None:
    store, dispatcher, worker, published = make()
    entered, gate = threading.Event(), threading.Event()
    commit = store.commit_prepared

    def held_commit(prepared, claim=None):
        entered.set()
        assert gate.wait(10)
        return commit(prepared, claim)

    store.commit_prepared = held_commit  # type: ignore[method-assign]
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    wait_for(lambda: store.claims == 1)
    starter = threading.Thread(target=dispatcher.start, args=("two-calls", {}))
    starter.start()
    assert entered.wait(10)  # its slot is reserved and its commit under way when the stop comes
    stop.set()
    worker.stop_waiting()
    runner.join(0.3)
    assert runner.is_alive()  # the pool stays up for the rows that commit leases
    assert worker.reserve(["other"]) is None  # nothing new is reserved once stopping
    gate.set()
    starter.join(10)
    runner.join(10)
    assert not runner.is_alive()
    assert published.topics == ["a"]  # delivered on the way out, its outcome recorded
    [left] = store.claim_actions(T0, 10, 30)  # the next action, committed unleased while stopping
    assert left.activity_id == "second"


class Keeper:
    """A claimer that keeps what it is handed, to feed the outcomes back by hand."""

    def __init__(self) -> None:
        self.actions: list = []

    def reserve(self, keys):
        return ActionClaim(list(keys), T0, 30.0)

    def claimed(self, claim, actions, left) -> None:
        self.actions += actions


def test_an_outcome_for_an_instance_that_moved_on_since_its_lease_is_applied_to_the_instance_as_it_is() -> None:
    store, dispatcher, _, _ = make()
    dispatcher.claimer = keeper = Keeper()
    state = dispatcher.start("two-calls", {"note": "first"})
    [action] = keeper.actions
    assert action.known is not None and action.known[1] == 1
    moved = store.load(state.id)
    store.commit([Step(replace(moved, variables={"note": "changed meanwhile"}), moved.version)])  # another writer
    dispatcher.action_finished(action, ActionSucceeded(action.token_id, action.attempt))  # its copy is stale: a conflict, then a read
    after = store.load(state.id)
    assert after.current_activity == "second" and after.variables == {"note": "changed meanwhile"}
    assert [a.activity_id for a in keeper.actions] == ["first", "second"]


def test_a_claim_under_way_holds_its_workers_from_a_commit_meanwhile() -> None:
    store, _, worker, _ = make(workers=2)
    entered, gate = threading.Event(), threading.Event()
    claim = store.claim_actions

    def held_claim(now, limit, lease_seconds):
        entered.set()
        assert gate.wait(10)
        return claim(now, limit, lease_seconds)

    store.claim_actions = held_claim  # type: ignore[method-assign]
    claiming = threading.Thread(target=worker.deliver_once)
    claiming.start()
    assert entered.wait(10)
    assert worker.reserve(["k"]) is None  # both workers may get a claimed row: none is left to lease at commit
    gate.set()
    claiming.join(10)
    assert worker.reserve(["k"]) is not None  # the claim found nothing: its workers are free again
    worker.pool.shutdown(wait=True)
