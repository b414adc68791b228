"""Large batches on both stores: many new instances in one commit, with the rows that refer to them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from process_engine.domain.errors import ConcurrencyConflict
from process_engine.engine.commands import RunAction, ScheduleTimer
from process_engine.ports import InstanceQuery, InstanceStore, Step
from tests.contract.test_instance_store import T0, instance, started, store  # noqa: F401  (the two-store fixture)


@pytest.mark.parametrize("count", [3, 120])  # PostgreSQL: an array statement for a few new instances, COPY for many
def test_many_new_instances_in_one_batch_read_back_with_their_timers_and_actions(store: InstanceStore, count: int) -> None:
    odd = ["quote ' \" \\ tab\t", "ünïcode ☃", "line\nbreak"]
    states = [
        instance(correlation_key=odd[n % 3], variables={"n": n, "text": odd[n % 3], "nested": {"list": [1, None, 2.5]}},
                 error=odd[n % 3] if n % 2 else None, completed_at=T0 + timedelta(seconds=n) if n % 2 else None)
        for n in range(count)
    ]
    steps = [
        Step(state, None, (started(), ScheduleTimer(f"tm-{n}", "t1", "wait_recheck", T0 + timedelta(minutes=n), "timer"),
                           RunAction(f"key-{n}", "t1", "notify", "log", {"message": odd[n % 3]}, 1)))
        for n, state in enumerate(states)
    ]
    store.commit(steps)
    for state in states:
        loaded = store.load(state.id)
        assert (loaded.variables, loaded.correlation_key, loaded.error, loaded.completed_at, loaded.version) == (
            state.variables, state.correlation_key, state.error, state.completed_at, 1)
        assert loaded.tokens == state.tokens and loaded.started_at == T0
    assert len(store.claim_due_timers(T0 + timedelta(days=1), count + 10, 30)) == count
    assert sorted(a.config["message"] for a in store.claim_actions(T0, count + 10, 30)) == sorted(odd[n % 3] for n in range(count))
    with pytest.raises(ConcurrencyConflict):  # one id already stored: the whole batch is refused
        store.commit([Step(instance(), None, (started(),)) for _ in range(count - 1)] + [Step(states[0], None, (started(),))])
    assert len(store.find_instances(InstanceQuery(limit=1000))) == count
    # Instances without a start time are given the commit's (PostgreSQL: the statement, not the COPY).
    undated = [instance(started_at=None) for _ in range(count)]
    store.commit([Step(state, None, (started(),)) for state in undated])
    assert all(store.load(state.id).started_at is not None for state in undated)
