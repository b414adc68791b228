"""The trigger-state part of the InstanceStore contract: holds saved, loaded, claimed, deleted, and conflicts.

Same `store` fixture as test_instance_store.py (imported from it): every test runs on
the memory and the PostgreSQL store. A file of its own to keep each under the size limit.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from process_engine.domain.errors import ConcurrencyConflict, StoreError
from process_engine.domain.trigger_state import TriggerState
from process_engine.ports import HoldWrite, InstanceStore, Step
from tests.contract.test_instance_store import T0, instance, store  # noqa: F401 (fixture)

DUE = T0 + timedelta(minutes=5)


def hold(key: str = "fz-1", **changes: object) -> TriggerState:
    """An open `for` hold of `flow`, due at DUE."""
    fields: dict[str, object] = dict(
        definition_id="flow",
        correlation_key=key,
        trigger_hash="abc123",
        definition_version=1,
        held_since=T0,
        due_at=DUE,
        variables={"temp": -4.5, "tags": ["a"]},
        document={"fields": {"temp": -4.5}, "big": 2**70},
        missing=("door",),
        cause="freezer:0:17",
    )
    fields.update(changes)
    return TriggerState(**fields)  # type: ignore[arg-type]


def save(store: InstanceStore, state: TriggerState | None, expected: int, key: str = "fz-1") -> None:
    store.commit([], holds=[HoldWrite("flow", key, state, expected)])


def test_a_state_round_trips_and_versions_count_up(store: InstanceStore) -> None:
    state = hold(counts=(T0, T0 + timedelta(seconds=1.5)), cooldown_until=T0 + timedelta(minutes=30))
    save(store, state, 0)
    loaded = store.load_trigger_states([("flow", "fz-1"), ("flow", "nobody"), ("flow", "fz-1")])
    assert loaded == {("flow", "fz-1"): replace(state, version=1)}
    save(store, replace(state, variables={"temp": -3.0}), 1)
    [again] = store.load_trigger_states([("flow", "fz-1")]).values()
    assert again.version == 2 and again.variables == {"temp": -3.0}
    assert store.load_trigger_states([]) == {}


def test_a_state_without_a_hold_keeps_its_nones(store: InstanceStore) -> None:
    state = TriggerState("flow", "fz-2", "abc123", 3, cooldown_until=T0)
    save(store, state, 0, "fz-2")
    assert store.load_trigger_states([("flow", "fz-2")]) == {("flow", "fz-2"): replace(state, version=1)}
    assert store.next_hold_due() is None and store.claim_due_holds(T0 + timedelta(days=1), 10, 30) == []


def test_stale_versions_conflict_and_change_nothing(store: InstanceStore) -> None:
    save(store, hold(), 0)
    with pytest.raises(ConcurrencyConflict):
        save(store, hold(variables={"temp": 1}), 0)  # a second first write: another writer was first
    with pytest.raises(ConcurrencyConflict):
        save(store, hold(variables={"temp": 2}), 7)
    with pytest.raises(ConcurrencyConflict):
        save(store, None, 7)
    [kept] = store.load_trigger_states([("flow", "fz-1")]).values()
    assert kept.version == 1 and kept.variables == {"temp": -4.5, "tags": ["a"]}


def test_a_conflicting_state_rolls_back_the_instances_of_its_batch(store: InstanceStore) -> None:
    save(store, hold(), 0)
    started = instance(id=str(uuid.uuid4()))
    with pytest.raises(ConcurrencyConflict):
        store.commit([Step(started, None)], holds=[HoldWrite("flow", "fz-1", None, 5)])
    assert store.load(started.id) is None
    store.commit([Step(started, None)], holds=[HoldWrite("flow", "fz-1", None, 1)])  # the start and the hold's end, together
    assert store.load(started.id) is not None and store.load_trigger_states([("flow", "fz-1")]) == {}


def test_one_key_twice_in_a_batch_and_unstorable_values_are_refused(store: InstanceStore) -> None:
    with pytest.raises(ConcurrencyConflict):
        store.commit([], holds=[HoldWrite("flow", "fz-1", hold(), 0), HoldWrite("flow", "fz-1", None, 1)])
    with pytest.raises(StoreError, match="NUL"):
        save(store, hold(variables={"name": "a\x00b"}), 0)
    with pytest.raises(StoreError, match="time zone"):
        save(store, hold(due_at=DUE.replace(tzinfo=None)), 0)
    assert store.load_trigger_states([("flow", "fz-1")]) == {}


def test_deleting_a_state_never_stored_writes_nothing(store: InstanceStore) -> None:
    save(store, None, 0)
    assert store.load_trigger_states([("flow", "fz-1")]) == {}


def test_due_holds_are_claimed_once_per_lease(store: InstanceStore) -> None:
    save(store, hold(), 0)
    save(store, hold("fz-2", due_at=DUE + timedelta(hours=1)), 0, "fz-2")
    assert store.next_hold_due() == DUE
    assert store.claim_due_holds(DUE - timedelta(seconds=1), 10, 30) == []
    [claimed] = store.claim_due_holds(DUE, 10, 30)
    assert claimed == replace(hold(), version=1)  # a claim does not bump the version
    assert store.claim_due_holds(DUE + timedelta(seconds=29), 10, 30) == []
    assert store.next_hold_due() == DUE + timedelta(seconds=30)
    assert [s.correlation_key for s in store.claim_due_holds(DUE + timedelta(seconds=31), 10, 30)] == ["fz-1"]


def test_a_write_ends_the_claim_and_a_delete_ends_the_hold(store: InstanceStore) -> None:
    save(store, hold(), 0)
    store.claim_due_holds(DUE, 10, 60)
    save(store, hold(due_at=DUE + timedelta(minutes=1)), 1)  # re-opened by a message: due at its own time
    assert store.next_hold_due() == DUE + timedelta(minutes=1)
    [claimed] = store.claim_due_holds(DUE + timedelta(minutes=1), 10, 60)
    save(store, None, claimed.version)
    assert store.next_hold_due() is None and store.load_trigger_states([("flow", "fz-1")]) == {}


def test_concurrent_claims_take_disjoint_holds(store: InstanceStore) -> None:
    store.commit([], holds=[HoldWrite("flow", f"k{n}", hold(f"k{n}"), 0) for n in range(30)])
    results: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def claim(slot: int) -> None:
        barrier.wait()
        for _ in range(15):
            results[slot] += [s.correlation_key for s in store.claim_due_holds(DUE, 3, 60)]

    threads = [threading.Thread(target=claim, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results[0] + results[1]) == sorted(f"k{n}" for n in range(30))
