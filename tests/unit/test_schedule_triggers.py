"""`schedule` triggers: a cron job per definition, one instance per tick."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.adapters.scheduler.timers import TimerService
from process_engine.ports import InstanceQuery
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry
from tests.unit.walking import definition_from

NIGHTLY = """
id: nightly
trigger: {type: schedule, cron: "30 2 * * *"}
variables:
  - {name: report, value: daily}
activities:
  - {id: start, type: start}
  - {id: done, type: end}
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 2, 30, 0, 400_000, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def service() -> tuple[TimerService, MemoryInstanceStore, Clock]:
    clock = Clock()
    store = MemoryInstanceStore(clock=clock)
    registry = DefinitionRegistry(store)
    registry.activate([definition_from(NIGHTLY)])
    timers = TimerService(store, Dispatcher(store, registry, clock=clock), clock=clock)
    timers.schedule_triggers(registry.active())
    return timers, store, clock


def test_each_schedule_definition_gets_a_cron_job_at_its_next_tick() -> None:
    timers, _, _ = service()
    timers.scheduler.start(paused=True)
    try:
        job = timers.scheduler.get_job("cron:nightly")
        after = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
        assert job.trigger.get_next_fire_time(None, after) == datetime(2026, 11, 24, 2, 30, tzinfo=timezone.utc)
    finally:
        timers.scheduler.shutdown(wait=False)


def test_a_tick_starts_one_instance_even_when_fired_twice() -> None:
    timers, store, clock = service()
    timers._tick("nightly")
    clock.now += timedelta(seconds=0.5)  # a second replica's job, a moment later, same minute
    timers._tick("nightly")
    [instance] = store.find_instances(InstanceQuery())
    assert instance.status == "completed" and instance.variables == {"report": "daily"}
    clock.now += timedelta(days=1)
    timers._tick("nightly")
    assert len(store.find_instances(InstanceQuery())) == 2


def test_removing_the_definition_removes_its_job() -> None:
    timers, _, _ = service()
    timers.schedule_triggers([])
    assert timers.scheduler.get_job("cron:nightly") is None
