"""One contract for every ActiveKeys index: the memory store's and PostgreSQL's LISTEN-kept one.

The promise the dispatcher relies on: a pair made active by a commit that finished
before the call is never ruled out, whichever writer made it, however long its key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from process_engine.adapters.memory.active_keys import MemoryActiveKeys
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.adapters.postgres import PostgresInstanceStore
from process_engine.adapters.postgres.active_keys import PostgresActiveKeys
from process_engine.ports import ActiveKeys, InstanceStore, Step, StoredDefinition
from tests.contract.test_instance_store import instance


class Subject:
    """A store and the index following it; `url` is the database's, None for memory."""

    def __init__(self, store: InstanceStore, index: ActiveKeys, url: str | None):
        self.store, self.index, self.url = store, index, url


@pytest.fixture(params=["memory", "postgres"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    url = request.getfixturevalue("database_url") if request.param == "postgres" else None
    store: InstanceStore = MemoryInstanceStore() if url is None else PostgresInstanceStore.connect(url, max_size=2)
    store.save_definition(StoredDefinition("flow", 0, "Flow", {"activities": []}, "hash-1"))
    store.commit([Step(instance(correlation_key="before-start"), None)])  # active before the index starts
    if url is None:
        index: ActiveKeys = MemoryActiveKeys(store)  # type: ignore[arg-type]
    else:
        index = PostgresActiveKeys.start(url, retry_delay=0.2)
        assert index.wait_ready(10), "the index did not load within 10 s"
    try:
        yield Subject(store, index, url)
    finally:
        index.close()
        store.close()


def test_a_key_is_active_as_soon_as_the_commit_that_started_it_returns(subject: Subject) -> None:
    asked = [("flow", "hp-1"), ("flow", "hp-2"), ("other", "hp-1"), ("flow", "before-start")]
    assert subject.index.possibly_active(asked) == [("flow", "before-start")]
    subject.store.commit([Step(instance(correlation_key="hp-1"), None)])
    assert subject.index.possibly_active(asked) == [("flow", "hp-1"), ("flow", "before-start")]
    assert subject.index.possibly_active([]) == []


def test_instances_that_were_never_active_or_have_no_key_make_no_key_active(subject: Subject) -> None:
    subject.store.commit([
        Step(instance(correlation_key="done", status="completed", tokens=()), None),
        Step(instance(correlation_key=None), None),
    ])
    assert subject.index.possibly_active([("flow", "done"), ("flow", "")]) == []


def test_a_suspended_or_retried_instance_counts_like_a_new_one(subject: Subject) -> None:
    failed = instance(correlation_key="retried", status="failed", tokens=(), error="boom")
    parked = instance(correlation_key="parked", status="suspended")
    subject.store.commit([Step(failed, None), Step(parked, None)])
    assert subject.index.possibly_active([("flow", "retried"), ("flow", "parked")]) == [("flow", "parked")]
    subject.store.commit([Step(failed.with_changes(status="running", error=None, tokens=instance().tokens), 1)])
    assert subject.index.possibly_active([("flow", "retried")]) == [("flow", "retried")]


def test_keys_of_any_size_and_spelling_are_followed(subject: Subject) -> None:
    odd = ["quote ' and \" and \\", "ünïcode ☃", "comma,[bracket]", "x" * 20_000]
    many = [f"bulk-{n:04d}-{'y' * 40}" for n in range(600)]  # more than one notice's worth
    subject.store.commit([Step(instance(correlation_key=key), None) for key in odd + many])
    asked = [("flow", key) for key in odd + many]
    assert subject.index.possibly_active(asked) == asked
    assert subject.index.possibly_active([("flow", "x" * 19_999)]) == []


@pytest.mark.parametrize("subject", ["postgres"], indirect=True)  # the memory store has one writer
def test_an_instance_written_by_another_process_counts_at_once(subject: Subject) -> None:
    assert subject.url is not None
    other = PostgresInstanceStore.connect(subject.url, max_size=1)
    try:
        other.commit([Step(instance(correlation_key="elsewhere"), None)])
    finally:
        other.close()
    assert subject.index.possibly_active([("flow", "elsewhere")]) == [("flow", "elsewhere")]


@pytest.mark.parametrize("subject", ["postgres"], indirect=True)  # the memory store has one writer
def test_a_lost_connection_answers_maybe_until_the_index_has_reloaded(subject: Subject) -> None:
    assert subject.url is not None
    index = subject.index
    assert isinstance(index, PostgresActiveKeys)
    with psycopg.connect(subject.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()")
        # Written while the index may be reconnecting: it must be in the reloaded set.
        subject.store.commit([Step(instance(correlation_key="during-outage"), None)])
    asked = [("flow", "during-outage"), ("flow", "never")]
    assert set(index.possibly_active(asked)) >= {("flow", "during-outage")}  # "maybe" for both while down
    deadline = time.monotonic() + 10
    while index.possibly_active(asked) != [("flow", "during-outage")]:  # precise again once reconnected and reloaded
        assert time.monotonic() < deadline, "the index did not come back within 10 s"
        time.sleep(0.1)


@pytest.mark.parametrize("subject", ["postgres"], indirect=True)  # anyone may NOTIFY a PostgreSQL channel
def test_notices_it_cannot_read_cost_a_re_read_not_the_index(subject: Subject) -> None:
    assert subject.url is not None
    with psycopg.connect(subject.url, autocommit=True) as other:
        for payload in ("not json", "[1]", '{"a": 1}', "[[1, 2, 3]]", "[null]", "\u2603"):
            other.execute("SELECT pg_notify('process_engine_active_keys', %s)", (payload,))
    subject.store.commit([Step(instance(correlation_key="after-noise"), None)])
    assert subject.index.possibly_active([("flow", "after-noise"), ("flow", "never")]) == [("flow", "after-noise")]
    assert subject.index.possibly_active([("flow", "before-start")]) == [("flow", "before-start")]  # re-read, still there


def test_a_sync_sent_before_the_work_sees_every_commit_before_it(subject: Subject) -> None:
    subject.store.commit([Step(instance(correlation_key="before-sync"), None)])
    pending = subject.index.start_sync()
    asked = [("flow", "before-sync"), ("flow", "never")]
    assert pending.result(5)(asked) == [("flow", "before-sync")]
    assert pending.result(5)(asked) == [("flow", "before-sync")]  # asked again: the same answer, nothing read twice
    pending.close()


def test_a_sync_let_go_unread_frees_the_index_for_the_next(subject: Subject) -> None:
    subject.index.start_sync().close()
    subject.store.commit([Step(instance(correlation_key="after-close"), None)])
    assert subject.index.possibly_active([("flow", "after-close"), ("flow", "never")]) == [("flow", "after-close")]


@pytest.mark.parametrize("subject", ["postgres"], indirect=True)  # only a server can stop answering
def test_a_sync_the_server_does_not_answer_lets_every_pair_through_and_the_index_recovers(subject: Subject) -> None:
    import os
    import signal

    assert subject.url is not None
    index = subject.index
    assert isinstance(index, PostgresActiveKeys)
    assert index._conn is not None
    pid = index._conn.info.backend_pid
    asked = [("flow", "before-start"), ("flow", "never")]
    os.kill(pid, signal.SIGSTOP)  # the index's backend freezes: its socket stays open and silent
    try:
        began = time.monotonic()
        assert index.start_sync().result(0.5)(asked) == asked  # "maybe" for both, after the timeout, not forever
        assert time.monotonic() - began < 5
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while index.possibly_active(asked) != [("flow", "before-start")]:  # a new connection, loaded again
        assert time.monotonic() < deadline, "the index did not come back within 10 s"
        time.sleep(0.1)


@pytest.mark.parametrize("subject", ["postgres"], indirect=True)  # the memory store's index is exact
def test_a_re_read_due_while_batches_hold_the_index_is_done_by_the_next_sync(subject: Subject) -> None:
    index = subject.index
    assert isinstance(index, PostgresActiveKeys)
    running = instance(correlation_key="ending")
    subject.store.commit([Step(running, None)])
    assert index.possibly_active([("flow", "ending")]) == [("flow", "ending")]
    subject.store.commit([Step(running.with_changes(status="completed", tokens=()), 1)])
    pending = index.start_sync()  # a batch holds the connection, as a busy consumer does from batch to batch
    index._loaded = time.monotonic() - 2 * index.reload_interval  # the ten-minute re-read is due
    time.sleep(2.5 * index.drain_interval)  # the keeper looks, finds the connection in use, and leaves the re-read to it
    assert index._reload
    assert pending.result(5)([("flow", "ending")]) == []  # re-read on the batch's sync: the ended key is gone


@pytest.mark.parametrize("subject", ["postgres"], indirect=True)  # the memory index holds nothing
def test_closing_while_a_sync_is_never_read_does_not_hang(subject: Subject) -> None:
    index = subject.index
    assert isinstance(index, PostgresActiveKeys)
    index.start_sync()  # a batch stuck somewhere else: its answer is never read
    began = time.monotonic()
    index.close()
    assert time.monotonic() - began < 10
    assert index.possibly_active([("flow", "before-start")]) == [("flow", "before-start")]  # closed: "maybe" for every pair


def test_a_syncs_answer_tells_one_definitions_keys_apart_as_it_does_pairs(subject: Subject) -> None:
    subject.store.save_definition(StoredDefinition("other", 0, "Other", {"activities": []}, "hash-o"))
    subject.store.commit([Step(instance(correlation_key="hp-1"), None), Step(instance(definition_id="other", correlation_key="hp-2"), None)])
    answer = subject.index.start_sync().result(5)
    keys = {"hp-1", "hp-2", "before-start", "never", "x" * 5000}
    assert sorted(answer.keys("flow", keys)) == ["before-start", "hp-1"]
    assert answer.keys("other", keys) == ["hp-2"]
    assert answer.keys("unknown", keys) == [] and answer.keys("flow", set()) == []
    subject.store.commit([Step(instance(correlation_key="later"), None)])
    subject.index.sync()  # reads the commit's notice: the earlier answer reads the index as it is when used
    assert answer.keys("flow", {"later", "never"}) == ["later"]


@pytest.mark.parametrize("subject", ["postgres"], indirect=True)  # only a server can stop answering
def test_an_answer_that_cannot_be_had_lets_every_key_through(subject: Subject) -> None:
    import os
    import signal

    index = subject.index
    assert isinstance(index, PostgresActiveKeys) and index._conn is not None
    pid = index._conn.info.backend_pid
    os.kill(pid, signal.SIGSTOP)
    try:
        assert sorted(index.start_sync().result(0.5).keys("flow", {"a", "b"})) == ["a", "b"]
    finally:
        os.kill(pid, signal.SIGCONT)
