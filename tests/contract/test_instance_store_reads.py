"""The InstanceStore reads the web console makes, on the memory and the PostgreSQL store alike."""

from __future__ import annotations

import uuid
from datetime import timedelta

from process_engine.engine.commands import RecordHistory, ScheduleTimer
from process_engine.ports import InstanceQuery, InstanceStore, Step, StoredDefinition
from tests.contract.test_instance_store import T0, instance, store  # noqa: F401  (the two-store fixture)


def test_instances_filter_by_status_definition_and_key_newest_first_in_pages(store: InstanceStore) -> None:
    store.save_definition(StoredDefinition("other", 0, "Other", {"activities": []}, "hash-o"))
    made = [
        instance(started_at=T0 + timedelta(minutes=n), correlation_key=f"hp-{n % 2}", status="running" if n < 4 else "completed")
        for n in range(6)
    ]
    made.append(instance(definition_id="other", started_at=T0 + timedelta(hours=1)))
    store.commit([Step(state, None) for state in made])

    def ids(**filters: object) -> list[str]:
        return [found.id for found in store.find_instances(InstanceQuery(**filters))]  # type: ignore[arg-type]

    newest_first = [state.id for state in reversed(made[:6])]
    assert ids(definition_id="flow") == newest_first
    assert ids(definition_id="flow", limit=2, offset=2) == newest_first[2:4]
    assert ids(definition_id="flow", offset=6) == []
    assert ids(status="completed") == newest_first[:2]
    assert ids(definition_id="flow", extra={"correlation_key": "hp-1"}) == [made[5].id, made[3].id, made[1].id]
    assert ids(status="running", extra={"correlation_key": "hp-0"}, limit=1, offset=1) == [made[0].id]
    assert ids(definition_id="other") == [made[6].id]


def test_instances_filter_by_the_trace_id_their_history_carries(store: InstanceStore) -> None:
    trace, other = uuid.uuid4().hex, uuid.uuid4().hex
    first = instance(trace=f"00-{trace}-00f067aa0ba902b7-01;vendor=1")
    second = instance(trace=f"00-{trace}-b7ad6b7169203331-01", started_at=T0 + timedelta(minutes=1))
    elsewhere, untraced = instance(trace=f"00-{other}-00f067aa0ba902b7-01"), instance()
    store.commit([Step(state, None, (RecordHistory("start", "started", T0),)) for state in (first, second, elsewhere, untraced)])

    def ids(trace_id: str) -> list[str]:
        return [found.id for found in store.find_instances(InstanceQuery(extra={"trace_id": trace_id}))]

    assert ids(trace) == [second.id, first.id]
    assert ids(other) == [elsewhere.id]
    assert ids(uuid.uuid4().hex) == []
    assert {h.trace_id for h in store.history(first.id)} == {trace}  # the tracestate is not part of the id
    assert store.load(first.id).trace == first.trace


def test_activity_visits_count_instances_per_activity_since_a_moment(store: InstanceStore) -> None:
    store.save_definition(StoredDefinition("other", 0, "Other", {"activities": []}, "hash-o"))
    early, late, elsewhere = instance(), instance(), instance(definition_id="other")

    def visit(activity: str | None, minutes: int) -> RecordHistory:
        return RecordHistory(activity, "completed", T0 + timedelta(minutes=minutes))

    store.commit([
        Step(early, None, (visit("start", 0), visit("check", 1), visit("check", 2), visit(None, 3))),
        Step(late, None, (visit("start", 30), visit("check", 31))),
        Step(elsewhere, None, (visit("start", 40),)),
    ])
    assert store.activity_visits(T0) == {("flow", "start"): 2, ("flow", "check"): 2, ("other", "start"): 1}
    assert store.activity_visits(T0 + timedelta(minutes=10)) == {("flow", "start"): 1, ("flow", "check"): 1, ("other", "start"): 1}
    assert store.activity_visits(T0 + timedelta(hours=1)) == {}


def test_pending_timers_are_an_instances_own_soonest_first(store: InstanceStore) -> None:
    mine, theirs = instance(), instance()
    later, sooner = T0 + timedelta(minutes=5), T0 + timedelta(minutes=1)
    store.commit([
        Step(mine, None, (ScheduleTimer("tm-a", "t1", "wait_recheck", later, "timer"), ScheduleTimer("tm-b", "t1", "until_low", sooner, "wait_timeout"))),
        Step(theirs, None, (ScheduleTimer("tm-c", "t1", "wait_recheck", sooner, "timer"),)),
    ])
    pending = store.pending_timers(mine.id)
    assert [(t.timer_id, t.activity_id, t.kind, t.due_at, t.instance_id) for t in pending] == [
        ("tm-b", "until_low", "wait_timeout", sooner, mine.id),
        ("tm-a", "wait_recheck", "timer", later, mine.id),
    ]
    assert store.pending_timers(str(uuid.uuid4())) == [] and store.pending_timers("not-a-uuid") == []


def test_definition_versions_newest_first(store: InstanceStore) -> None:
    store.save_definition(StoredDefinition("flow", 0, "Flow", {"activities": [{"id": "start"}]}, "hash-2"))
    versions = store.definition_versions("flow")
    assert [(v.version, v.content_hash, v.definition) for v in versions] == [
        (2, "hash-2", {"activities": [{"id": "start"}]}),
        (1, "hash-1", {"activities": []}),
    ]
    assert all(v.created_at is not None for v in versions)
    assert store.definition_versions("unknown") == []
