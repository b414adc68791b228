"""One contract for every InstanceStore: each test runs on the memory and the PostgreSQL store."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.adapters.postgres import PostgresInstanceStore
from process_engine.domain.errors import ConcurrencyConflict, StoreError
from process_engine.domain.instance import InstanceState, Token
from process_engine.engine.commands import (
    CancelTimer,
    InstanceCompleted,
    RecordHistory,
    RunAction,
    ScheduleTimer,
)
from process_engine.ports import (
    DeadLetter,
    InstanceQuery,
    InstanceStore,
    LedgerEntry,
    MessageCoordinate,
    Step,
    StoredDefinition,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[InstanceStore]:
    """The store under test, with definition `flow` v1 already saved."""
    if request.param == "memory":
        subject: InstanceStore = MemoryInstanceStore()
    else:
        subject = PostgresInstanceStore.connect(request.getfixturevalue("database_url"), max_size=4)
    try:
        subject.save_definition(StoredDefinition("flow", 0, "Flow", {"activities": []}, "hash-1"))
        yield subject
    finally:
        subject.close()


def instance(**changes: object) -> InstanceState:
    """A running instance of `flow` v1 waiting on a timer."""
    fields: dict[str, object] = dict(
        id=str(uuid.uuid4()),
        definition_id="flow",
        definition_version=1,
        variables={"device_id": "hp-1", "temperature": 27.5, "tags": ["a", "b"]},
        tokens=(Token("t1", "wait_recheck", waiting="timer", timer_id="tm-1", visit=1),),
        correlation_key="hp-1",
        started_at=T0,
        next_token=2,
        visits={"wait_recheck": 1},
    )
    fields.update(changes)
    return InstanceState(**fields)  # type: ignore[arg-type]


def started() -> RecordHistory:
    """A history command at the instances' start time."""
    return RecordHistory("start", "started", T0, {"trigger": {"offset": 1}}, "started")


# --- instances -------------------------------------------------------------------


def test_insert_and_load_round_trip(store: InstanceStore) -> None:
    state = instance(completed_at=T0 + timedelta(minutes=5), status="failed", error="boom")
    store.commit([Step(state, None)])
    loaded = store.load(state.id)
    assert loaded == state.with_changes(version=1)
    assert loaded.tokens[0].timer_id == "tm-1" and loaded.current_activity == "wait_recheck"


def test_load_unknown_or_malformed_id_gives_none(store: InstanceStore) -> None:
    assert store.load(str(uuid.uuid4())) is None
    assert store.load("not-a-uuid") is None
    assert store.history("not-a-uuid") == []


def test_update_bumps_version(store: InstanceStore) -> None:
    state = instance()
    store.commit([Step(state, None)])
    changed = state.with_changes(variables={"temperature": 24.0}, status="completed", tokens=())
    store.commit([Step(changed, 1, (InstanceCompleted(T0),))])
    loaded = store.load(state.id)
    assert (loaded.version, loaded.status, loaded.variables) == (2, "completed", {"temperature": 24.0})
    assert loaded.current_activity is None


def test_stale_write_conflicts_and_the_whole_batch_is_dropped(store: InstanceStore) -> None:
    stale, fresh = instance(), instance()
    store.commit([Step(stale, None)])
    store.commit([Step(stale.with_changes(variables={"v": 2}), 1)])
    batch = [
        Step(fresh, None, (started(), ScheduleTimer("tm-f", "t1", "w", T0, "timer"))),
        Step(stale.with_changes(variables={"v": 3}), 1, (started(),)),
    ]
    with pytest.raises(ConcurrencyConflict) as caught:
        store.commit(batch)
    assert caught.value.retriable
    assert store.load(fresh.id) is None and store.history(fresh.id) == []
    assert store.load(stale.id).variables == {"v": 2} and store.history(stale.id) == []
    assert store.claim_due_timers(T0, 10, 30) == []


def test_a_prepared_commit_writes_nothing_until_it_is_committed(store: InstanceStore) -> None:
    state = instance()
    prepared = store.prepare_commit([Step(state, None, (started(),))], [LedgerEntry(MessageCoordinate("t", 0, 7), "flow", state.id)])
    assert store.load(state.id) is None and store.seen_messages([MessageCoordinate("t", 0, 7)]) == set()
    store.commit_prepared(prepared)
    assert store.load(state.id).version == 1 and [h.event_type for h in store.history(state.id)] == ["started"]
    assert store.seen_messages([MessageCoordinate("t", 0, 7)]) == {MessageCoordinate("t", 0, 7)}


def test_preparing_refuses_bad_values_and_committing_a_stale_preparation_conflicts(store: InstanceStore) -> None:
    with pytest.raises(StoreError, match="NUL"):
        store.prepare_commit([Step(instance(variables={"name": "a\x00b"}), None)])
    state = instance()
    store.commit([Step(state, None)])
    stale = store.prepare_commit([Step(state.with_changes(variables={"v": 1}), 1)])
    store.commit([Step(state.with_changes(variables={"v": 2}), 1)])
    with pytest.raises(ConcurrencyConflict):
        store.commit_prepared(stale)
    assert store.load(state.id).variables == {"v": 2}


def test_duplicate_insert_conflicts(store: InstanceStore) -> None:
    state = instance()
    store.commit([Step(state, None)])
    with pytest.raises(ConcurrencyConflict):
        store.commit([Step(state.with_changes(variables={}), None)])
    assert store.load(state.id).variables == state.variables


def test_steps_of_one_instance_chain_within_a_batch(store: InstanceStore) -> None:
    state = instance()
    store.commit([Step(state, None), Step(state.with_changes(status="suspended"), 1)])
    assert (store.load(state.id).version, store.load(state.id).status) == (2, "suspended")
    with pytest.raises(ConcurrencyConflict):
        store.commit([Step(state, 2), Step(state, 2)])


def test_unknown_definition_fails_and_leaves_nothing_partial(store: InstanceStore) -> None:
    good, orphan = instance(), instance(definition_id="nowhere")
    coordinate = MessageCoordinate("telemetry", 0, 7)
    batch = [
        Step(good, None, (started(), RunAction("k-good", "t1", "a", "log", {}, 1))),
        Step(orphan, None, (started(),)),
    ]
    with pytest.raises(StoreError) as caught:
        store.commit(batch, [LedgerEntry(coordinate, "flow", good.id)])
    assert not isinstance(caught.value, ConcurrencyConflict)
    assert store.load(good.id) is None and store.history(good.id) == []
    assert store.seen_messages([coordinate]) == set()
    assert store.claim_actions(T0, 10, 30) == []


def test_values_that_are_not_json_or_naive_times_are_refused(store: InstanceStore) -> None:
    with pytest.raises(StoreError, match="JSON"):
        store.commit([Step(instance(variables={"when": T0}), None)])
    with pytest.raises(StoreError, match="time zone"):
        store.commit([Step(instance(started_at=datetime(2030, 1, 1)), None)])
    with pytest.raises(StoreError, match="status"):
        store.commit([Step(instance(status="exploded"), None)])
    with pytest.raises(StoreError, match="time zone"):
        store.claim_due_timers(datetime(2030, 1, 1), 10, 30)
    with pytest.raises(StoreError, match="UUID"):
        store.commit([Step(instance(id="instance-1"), None)])
    with pytest.raises(StoreError, match="NUL"):
        store.commit([Step(instance(correlation_key="hp\x00x"), None)])
    with pytest.raises(StoreError, match="history data of note contains a NUL"):
        store.commit([Step(instance(), None, (RecordHistory("a", "note", T0, {"text": "a\x00b"}),))])
    with pytest.raises(StoreError, match="history data of note is not JSON"):
        store.commit([Step(instance(), None, (RecordHistory("a", "note", T0, {"when": T0}),))])
    assert store.find_instances(InstanceQuery()) == []
    odd = instance(variables={"path": "C:\\u0000dir", "nul": "\\\\u0000"})  # backslashes before `u0000`: no NUL
    store.commit([Step(odd, None, (RecordHistory("a", "note", T0, dict(odd.variables)),))])
    assert store.load(odd.id).variables == odd.variables and store.history(odd.id)[0].data == odd.variables
    with pytest.raises(StoreError, match="NUL"):  # a backslash, then a NUL
        store.commit([Step(instance(), None, (RecordHistory("a", "note", T0, {"text": "\\\x00"}),))])


def test_numbers_json_cannot_spell_become_null_and_big_integers_survive(store: InstanceStore) -> None:
    special = instance(variables={"nan": float("nan"), "inf": float("-inf"), "keys": {1: "one"}})
    big = instance(variables={"big": 2**80})
    store.commit([Step(special, None), Step(big, None)])
    assert store.load(special.id).variables == {"nan": None, "inf": None, "keys": {"1": "one"}}
    assert store.load(big.id).variables == {"big": 2**80}


def test_loaded_values_are_copies(store: InstanceStore) -> None:
    state = instance()
    store.commit([Step(state, None)])
    store.load(state.id).variables["tags"].append("mutated")
    store.load_definition("flow", 1).definition["activities"].append("mutated")
    assert store.load(state.id).variables["tags"] == ["a", "b"]
    assert store.load_definition("flow", 1).definition == {"activities": []}


# --- history ---------------------------------------------------------------------


def test_history_orders_by_time_then_insertion_with_metadata(store: InstanceStore) -> None:
    state = instance()
    later = T0 + timedelta(seconds=1)
    commands = (
        RecordHistory("check", "completed", later, None, "second, later"),
        RecordHistory("start", "started", T0, {"n": 1}),
        RecordHistory("check", "started", T0, {"n": 2}),
    )
    store.commit([Step(state, None, commands, correlation_id="msg-1", causation_id="msg-0")])
    store.commit([Step(state, 1, (RecordHistory("end", "completed", later),), "msg-2", "tm-1")])
    records = store.history(state.id)
    assert [(r.event_type, r.activity_id) for r in records] == [
        ("started", "start"), ("started", "check"), ("completed", "check"), ("completed", "end")
    ]
    assert [r.data for r in records[:2]] == [{"n": 1}, {"n": 2}]
    assert records[2].message == "second, later" and records[2].timestamp == later
    assert [(r.correlation_id, r.causation_id) for r in records[1:]] == [
        ("msg-1", "msg-0"), ("msg-1", "msg-0"), ("msg-2", "tm-1")
    ]
    assert len({uuid.UUID(r.event_id) for r in records}) == 4
    assert {r.instance_id for r in records} == {state.id}


@pytest.mark.parametrize("rows", [1, 40, 200])  # PostgreSQL: array statements up to 64 rows, COPY above
def test_history_and_ledger_rows_read_back_the_same_whatever_the_batch_size(store: InstanceStore, rows: int) -> None:
    state = instance(trace="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    odd = ["quote ' \" \\ tab\t", "ünïcode ☃", None]
    commands = tuple(
        RecordHistory(f"a{n}", "completed", T0 + timedelta(microseconds=n), {"n": n, "text": odd[n % 3]}, odd[n % 3])
        for n in range(rows)
    )
    coordinates = [MessageCoordinate("telemetry", n % 3, n) for n in range(rows)]
    store.commit([Step(state, None, commands, correlation_id="msg-1")], [LedgerEntry(c, "flow", state.id) for c in coordinates])
    records = store.history(state.id)
    assert [(r.activity_id, r.timestamp, r.data, r.message) for r in records] == [
        (f"a{n}", T0 + timedelta(microseconds=n), {"n": n, "text": odd[n % 3]}, odd[n % 3]) for n in range(rows)
    ]
    assert {(r.correlation_id, r.trace_id) for r in records} == {("msg-1", "4bf92f3577b34da6a3ce929d0e0e4736")}
    assert store.seen_messages(coordinates + [MessageCoordinate("telemetry", 0, rows + 3)]) == set(coordinates)
    with pytest.raises(ConcurrencyConflict):  # a message already in the ledger, whichever way it is written
        store.commit([Step(instance(), None)], [LedgerEntry(c, "flow", None) for c in coordinates])
    assert len(store.find_instances(InstanceQuery())) == 1


# --- timers ----------------------------------------------------------------------


def test_timers_are_scheduled_cancelled_and_claimed_once_per_lease(store: InstanceStore) -> None:
    state = instance()
    soon, later = T0 + timedelta(minutes=5), T0 + timedelta(hours=1)
    schedule = (
        ScheduleTimer("tm-1", "t1", "wait_recheck", soon, "timer"),
        ScheduleTimer("tm-2", "t1", "wait_recheck", later, "wait_timeout"),
        ScheduleTimer("tm-3", "t1", "wait_recheck", soon, "retry"),
    )
    store.commit([Step(state, None, schedule)])
    store.commit([Step(state, 1, (CancelTimer("tm-3"),))])
    assert store.next_timer_due() == soon
    assert store.claim_due_timers(soon - timedelta(seconds=1), 10, 30) == []
    claimed = store.claim_due_timers(soon, 10, 30)
    assert [(t.timer_id, t.kind, t.due_at, t.token_id) for t in claimed] == [
        ("tm-1", "timer", soon, "t1")
    ]
    assert claimed[0].instance_id == state.id and claimed[0].activity_id == "wait_recheck"
    assert store.claim_due_timers(soon + timedelta(seconds=29), 10, 30) == []
    assert store.next_timer_due() == soon + timedelta(seconds=30)
    again = store.claim_due_timers(soon + timedelta(seconds=31), 10, 30)
    assert [t.timer_id for t in again] == ["tm-1"]


def test_a_timer_is_consumed_once(store: InstanceStore) -> None:
    state = instance()
    store.commit([Step(state, None, (ScheduleTimer("tm-1", "t1", "w", T0, "timer"),))])
    store.commit([Step(state, 1, consumed_timer="tm-1")])
    with pytest.raises(ConcurrencyConflict, match="tm-1"):
        store.commit([Step(state, 2, consumed_timer="tm-1")])
    assert store.load(state.id).version == 2
    assert store.next_timer_due() is None


def test_a_timer_scheduled_again_after_being_consumed(store: InstanceStore) -> None:
    state = instance()
    store.commit([Step(state, None, (ScheduleTimer("tm-1", "t1", "w", T0, "timer"),))])
    retry = ScheduleTimer("tm-1", "t1", "w", T0 + timedelta(minutes=1), "retry")
    store.commit([Step(state, 1, (retry,), consumed_timer="tm-1")])
    assert [t.kind for t in store.claim_due_timers(T0 + timedelta(minutes=1), 10, 5)] == ["retry"]
    with pytest.raises(ConcurrencyConflict):
        store.commit([Step(state, 2, (retry,))])


def test_concurrent_claims_take_disjoint_timers(store: InstanceStore) -> None:
    state = instance()
    timers = tuple(ScheduleTimer(f"tm-{n}", "t1", "w", T0, "timer") for n in range(40))
    store.commit([Step(state, None, timers)])
    results: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def claim(slot: int) -> None:
        barrier.wait()
        for _ in range(20):
            results[slot] += [t.timer_id for t in store.claim_due_timers(T0, 3, 60)]

    threads = [threading.Thread(target=claim, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results[0] + results[1]) == sorted(t.timer_id for t in timers)


# --- outbox ----------------------------------------------------------------------


def test_outbox_actions_are_claimed_and_consumed(store: InstanceStore) -> None:
    state = instance()
    action = RunAction("i/notify/1", "t1", "notify", "mqtt_publish", {"topic": "x", "qos": 1}, 1)
    store.commit([Step(state, None, (action,))])
    store.commit([Step(state, 1, (action,))])  # same idempotency key: still one row
    claimed = store.claim_actions(T0, 10, 30)
    assert [(a.idempotency_key, a.action, a.config, a.attempt) for a in claimed] == [
        ("i/notify/1", "mqtt_publish", {"topic": "x", "qos": 1}, 1)
    ]
    assert claimed[0].instance_id == state.id and claimed[0].activity_id == "notify"
    assert claimed[0].definition_id == state.definition_id  # for the action's context, without a second read
    assert store.claim_actions(T0 + timedelta(seconds=10), 10, 30) == []
    assert len(store.claim_actions(T0 + timedelta(seconds=30), 10, 30)) == 1
    store.commit([Step(state, 2, consumed_action="i/notify/1")])
    assert store.claim_actions(T0 + timedelta(hours=1), 10, 30) == []
    with pytest.raises(ConcurrencyConflict, match="i/notify/1"):
        store.commit([Step(state, 3, consumed_action="i/notify/1")])


# --- trigger ledger and dead letters ---------------------------------------------


def test_ledger_records_seen_messages_once(store: InstanceStore) -> None:
    state = instance()
    first, second = MessageCoordinate("telemetry", 0, 41), MessageCoordinate("telemetry", 1, 41)
    store.commit([Step(state, None)], [LedgerEntry(first, "flow", state.id)])
    store.commit([], [LedgerEntry(first, "other-flow", None)])
    assert store.seen_messages([first, second]) == {first}
    assert store.seen_messages([]) == set()
    with pytest.raises(ConcurrencyConflict):
        store.commit([Step(instance(), None)], [LedgerEntry(first, "flow", None)])
    assert len(store.find_instances(InstanceQuery())) == 1


def test_ledger_marks_are_the_highest_offset_per_partition(store: InstanceStore) -> None:
    entries = [LedgerEntry(MessageCoordinate("telemetry", p, o), "flow", None) for p, o in [(0, 5), (0, 12), (0, 9), (1, 3)]]
    store.commit([], entries + [LedgerEntry(MessageCoordinate("other", 0, 99), "flow", None)])
    marks = store.ledger_marks([("telemetry", 0), ("telemetry", 1), ("telemetry", 2)])
    assert marks == {("telemetry", 0): 12, ("telemetry", 1): 3}  # partition 2 has none
    assert store.ledger_marks([]) == {}


def test_dead_letters_newest_first(store: InstanceStore) -> None:
    letters = [
        DeadLetter(MessageCoordinate("telemetry", 0, n), f"not JSON #{n}", b"\x00garbage", b"k")
        for n in range(3)
    ]
    store.commit([], dead_letters=letters[:2])
    store.commit([], dead_letters=[letters[2]])
    assert store.dead_letters() == letters[::-1]
    assert store.dead_letters(limit=1) == [letters[2]]


# --- definitions -----------------------------------------------------------------


def test_definitions_are_versioned_by_content_hash(store: InstanceStore) -> None:
    again = store.save_definition(StoredDefinition("flow", 0, "Flow", {"activities": []}, "hash-1"))
    assert (again.version, again.created_at is not None) == (1, True)
    changed = store.save_definition(StoredDefinition("flow", 0, "Flow 2", {"v": 2}, "hash-2"))
    assert (changed.version, changed.name, changed.definition) == (2, "Flow 2", {"v": 2})
    assert store.save_definition(StoredDefinition("flow", 9, "Flow", {}, "hash-1")).version == 1
    assert store.load_definition("flow", 2) == changed
    assert store.load_definition("flow", 3) is None
    assert store.save_definition(StoredDefinition("other", 0, "O", {}, "hash-1")).version == 1


# --- queries ---------------------------------------------------------------------


def test_active_by_key_lists_live_instances_oldest_first(store: InstanceStore) -> None:
    store.save_definition(StoredDefinition("other", 0, "Other", {}, "h"))
    newer = instance(started_at=T0 + timedelta(seconds=2), status="suspended")
    older = instance(started_at=T0 + timedelta(seconds=1))
    done = instance(status="completed", completed_at=T0)
    elsewhere = instance(definition_id="other")
    store.commit([Step(s, None) for s in (newer, older, done, elsewhere, instance(correlation_key="x"))])
    assert [s.id for s in store.active_by_key("flow", "hp-1")] == [older.id, newer.id]
    assert store.active_by_key("flow", "nobody") == []




def test_load_many_gives_the_known_instances_by_id(store: InstanceStore) -> None:
    first, second = instance(), instance(status="completed", completed_at=T0)
    store.commit([Step(s, None) for s in (first, second)])
    found = store.load_many([first.id, second.id, str(uuid.uuid4()), "not-a-uuid", first.id])
    assert found == {first.id: store.load(first.id), second.id: store.load(second.id)}
    assert store.load_many([]) == {}

def test_active_by_keys_answers_many_keys_in_one_call_and_its_versions_name_the_same_rows(store: InstanceStore) -> None:
    newer = instance(started_at=T0 + timedelta(seconds=2), status="suspended")
    older = instance(started_at=T0 + timedelta(seconds=1))
    other_key = instance(correlation_key="hp-2")
    done = instance(status="completed", completed_at=T0, correlation_key="hp-3")
    store.commit([Step(s, None) for s in (newer, older, other_key, done)])
    store.commit([Step(store.load(older.id), 1)])  # version 2 now
    asked = [("flow", "hp-1"), ("flow", "hp-2"), ("flow", "hp-3"), ("flow", "hp-1"), ("other", "hp-1")]
    found = store.active_by_keys(asked)
    assert {key: [s.id for s in states] for key, states in found.items()} == {
        ("flow", "hp-1"): [older.id, newer.id],
        ("flow", "hp-2"): [other_key.id],
    }
    assert store.active_versions_by_keys(asked) == {key: [(s.id, s.version) for s in states] for key, states in found.items()}
    assert store.active_versions_by_keys(asked)[("flow", "hp-1")] == [(older.id, 2), (newer.id, 1)]
    assert store.active_by_keys([]) == {} and store.active_versions_by_keys([]) == {}


def test_find_instances_filters_newest_first(store: InstanceStore) -> None:
    states = [instance(started_at=T0 + timedelta(seconds=n), status=s, correlation_key=f"k{n}")
              for n, s in enumerate(["running", "completed", "running", "failed"])]
    store.commit([Step(s, None) for s in states])

    def ids(query: InstanceQuery) -> list[str]:
        return [s.id for s in store.find_instances(query)]

    assert ids(InstanceQuery()) == [s.id for s in reversed(states)]
    assert ids(InstanceQuery(status="running")) == [states[2].id, states[0].id]
    assert ids(InstanceQuery(definition_id="flow", limit=2)) == [states[3].id, states[2].id]
    assert ids(InstanceQuery(definition_id="other")) == []
    assert ids(InstanceQuery(extra={"correlation_key": "k1"})) == [states[1].id]
    with pytest.raises(StoreError, match="colour"):
        store.find_instances(InstanceQuery(extra={"colour": "red"}))
