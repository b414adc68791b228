"""Pipelined batches: a batch prepared on top of one still committing sees what that one writes."""

from __future__ import annotations

import pytest

from process_engine.domain.errors import ConcurrencyConflict, StoreError
from process_engine.ports import InstanceQuery
from tests.unit.test_dispatcher import CORRELATED, Clock, level, make, reading
from tests.unit.walking import definition_from, example


@pytest.fixture
def clock() -> Clock:
    return Clock()


def history(store, instance_id: str) -> list[str]:
    return [row.event_type for row in store.history(instance_id)]


def test_a_batch_prepared_on_an_uncommitted_one_refreshes_the_instance_it_started(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "single"))], clock)
    first = dispatcher.prepare_batch([level(20)])
    second = dispatcher.prepare_batch([level(25)], after=first)  # the first is not in the store yet
    assert store.find_instances(InstanceQuery()) == []
    [instance_id] = dispatcher.commit_prepared(first).started
    assert dispatcher.commit_prepared(second).started == []
    instance = store.load(instance_id)
    assert instance.variables["level"] == 25 and instance.version == 2
    assert history(store, instance_id).count("variable_changed") == 1


def test_an_instance_the_batch_before_finished_is_not_refreshed_again(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "single"))], clock)
    [started] = dispatcher.handle_batch([level(20)]).started
    first = dispatcher.prepare_batch([level(1)])  # ends the stored instance
    second = dispatcher.prepare_batch([level(30)], after=first)  # so this one starts a new one
    dispatcher.commit_prepared(first)
    [again] = dispatcher.commit_prepared(second).started
    assert store.load(started).status == "completed" and store.load(again).status == "running"


def test_pipelined_batches_leave_the_same_instances_as_one_batch_after_another(clock: Clock) -> None:
    readings = [[level(v, f"tank-{n % 3}") for n, v in enumerate(values)] for values in ([20, 30, 12], [25, 3, 40], [1, 2, 50])]
    sequential, one_by_one, _ = make([definition_from(CORRELATED.replace("MODE", "single"))], clock)
    for batch in readings:
        one_by_one.handle_batch(batch)
    pipelined, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "single"))], clock)
    before = None
    for batch in readings:
        prepared = dispatcher.prepare_batch(batch, after=before)
        if before is not None:
            dispatcher.commit_prepared(before)
        before = prepared
    dispatcher.commit_prepared(before)

    def summary(store):
        found = store.find_instances(InstanceQuery())
        return sorted((i.correlation_key, i.status, i.variables["level"], i.version, tuple(history(store, i.id))) for i in found)

    assert summary(pipelined) == summary(sequential)


def test_a_batch_built_on_one_that_never_committed_cannot_land(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "single"))], clock)
    first = dispatcher.prepare_batch([level(20)])
    second = dispatcher.prepare_batch([level(25)], after=first)
    with pytest.raises(ConcurrencyConflict):
        dispatcher.commit_prepared(second)  # it updates an instance the store never got
    assert store.find_instances(InstanceQuery()) == []
    assert dispatcher.handle_batch([level(20), level(25)]).started  # the careful way still works


def test_a_value_the_store_refuses_is_found_while_preparing(clock: Clock) -> None:
    store, dispatcher, _ = make([example("temperature-control.yaml")], clock)
    poison = reading(30.0, device="hp\x00x")
    with pytest.raises(StoreError, match="NUL"):
        dispatcher.prepare_batch([poison])
    result = dispatcher.handle_batch([poison])  # one message alone: dead-lettered
    assert result.dead_lettered == 1 and store.find_instances(InstanceQuery()) == []


def test_a_refused_message_in_a_large_batch_is_found_by_halving_it(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "parallel"))], clock)
    commits = []
    prepare = store.prepare_commit
    store.prepare_commit = lambda *args, **kwargs: (commits.append(1), prepare(*args, **kwargs))[1]  # count transactions
    batch = [level(20, f"tank-{n}") for n in range(64)]
    batch[37] = level(20, "tank\x00x")
    result = dispatcher.handle_batch(batch)
    assert result.dead_lettered == 1 and len(result.started) == 63
    assert len(store.find_instances(InstanceQuery(limit=100))) == 63
    assert len(commits) <= 1 + 2 * 6 + 1  # the whole, two halves per level (64 = 2**6), the dead letter


def test_only_messages_at_or_below_the_ledger_mark_are_looked_up(clock: Clock) -> None:
    store, dispatcher, _ = make([definition_from(CORRELATED.replace("MODE", "parallel"))], clock)
    old = [level(20, "tank-1"), level(30, "tank-2")]
    dispatcher.handle_batch(old)
    marks = dispatcher.ledger_marks([("levels", 0)])
    assert marks == {("levels", 0): old[-1].coordinate.offset}
    looked_up = []
    seen_messages = store.seen_messages
    store.seen_messages = lambda coordinates: (looked_up.append(list(coordinates)), seen_messages(coordinates))[1]
    new = [level(40, "tank-3")]
    assert len(dispatcher.commit_prepared(dispatcher.prepare_batch(new, marks=marks)).started) == 1
    assert looked_up == []  # above the mark: no round trip
    redelivered = dispatcher.prepare_batch([*old, level(50, "tank-4")], marks=marks)
    result = dispatcher.commit_prepared(redelivered)
    assert looked_up == [[m.coordinate for m in old]] and result.duplicates == 2 and len(result.started) == 1
