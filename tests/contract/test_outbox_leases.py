"""Outbox rows leased by the commit that writes them, on the memory and the PostgreSQL store alike.

The outbox worker asks a commit to lease the rows it has idle workers for, so an
action starts when its commit returns, with no claim round trip between.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from process_engine.domain.errors import ConcurrencyConflict
from process_engine.engine.commands import RecordHistory, RunAction
from process_engine.ports import ActionClaim, InstanceStore, PendingAction, Step
from tests.contract.test_instance_store import T0, instance, started, store  # noqa: F401  (the two-store fixture)


def _committed_with_claim(store: InstanceStore, steps: list[Step], claim: ActionClaim | None) -> list[PendingAction]:
    return store.commit_prepared(store.prepare_commit(steps), claim)


@pytest.mark.parametrize("history_rows", [1, 80], ids=["pipelined", "with-copy"])
def test_a_commit_leases_the_action_rows_it_was_asked_to_and_leaves_the_rest_to_claims(store: InstanceStore, history_rows: int) -> None:
    state = instance()
    first = RunAction("i/notify/1", "t1", "notify", "mqtt_publish", {"topic": "x", "qos": 1}, 1)
    second = RunAction("i/notify/2", "t1", "notify", "log", {"message": "m"}, 1)
    history = tuple(RecordHistory("start", "note", T0, {"n": n}, "") for n in range(history_rows))
    leased = _committed_with_claim(store, [Step(state, None, (*history, first, second))], ActionClaim(["i/notify/1"], T0, 30))
    assert [(a.idempotency_key, a.instance_id, a.activity_id, a.action, a.config, a.attempt, a.definition_id) for a in leased] == [
        ("i/notify/1", state.id, "notify", "mqtt_publish", {"topic": "x", "qos": 1}, 1, "flow")
    ]
    assert [a.idempotency_key for a in store.claim_actions(T0, 10, 30)] == ["i/notify/2"]  # the one not leased
    assert store.claim_actions(T0 + timedelta(seconds=10), 10, 30) == []
    again = store.claim_actions(T0 + timedelta(seconds=31), 10, 30)  # both leases ran out: a crashed deliverer's rows go on
    assert [a.idempotency_key for a in again] == ["i/notify/1", "i/notify/2"]
    assert again[0] == leased[0]  # the commit's lease hands over the same row a claim does
    assert _committed_with_claim(store, [Step(state, 1, (started(),))], None) == []


def test_a_commit_does_not_lease_a_row_someone_else_holds_nor_anything_when_it_conflicts(store: InstanceStore) -> None:
    state = instance()
    action = RunAction("i/notify/1", "t1", "notify", "log", {}, 1)
    store.commit([Step(state, None, (action,))])
    assert len(store.claim_actions(T0, 10, 30)) == 1  # a replica's claim under way
    claim = ActionClaim(["i/notify/1"], T0 + timedelta(seconds=1), 30)
    assert _committed_with_claim(store, [Step(state, 1, (action,))], claim) == []  # same key: still the replica's
    later = RunAction("i/notify/2", "t1", "notify", "log", {}, 1)
    with pytest.raises(ConcurrencyConflict):
        _committed_with_claim(store, [Step(state, 1, (later,))], ActionClaim(["i/notify/2"], T0, 30))  # stale version
    assert store.claim_actions(T0 + timedelta(seconds=31), 10, 30)[0].idempotency_key == "i/notify/1"
    assert store.claim_actions(T0 + timedelta(seconds=31), 10, 30) == []  # the conflicting commit wrote no row
