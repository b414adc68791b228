"""Durable timers woken by APScheduler, and cron `schedule` triggers.

Timer rows are committed with the step that created them; this service only decides
*when* to look. APScheduler wakes it at the earliest due time it knows of; a periodic
sweep picks up timers created by other replicas and overdue ones after a restart.
Each timer is claimed with FOR UPDATE SKIP LOCKED and a lease, and used up by the
step it causes, so it fires once across replicas. Trigger holds (`for:`) that come
due are claimed and completed the same way, in the same wake-ups.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.errors import ProcessEngineError
from process_engine.engine.commands import ScheduleTimer
from process_engine.ports import InstanceStore, Step
from process_engine.runtime.dispatcher import Dispatcher, utc_now

log = logging.getLogger("process_engine.timers")
WAKE_JOB = "wake"


class TimerService:
    """Fires due timers; `notice(steps)` tells it about timers just committed."""

    def __init__(
        self,
        store: InstanceStore,
        dispatcher: Dispatcher,
        clock: Callable[[], datetime] = utc_now,
        batch_size: int = 500,
        lease_seconds: float = 30.0,
        sweep_seconds: float = 1.0,
        on_fired: Callable[[list[float]], None] | None = None,
    ):
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.sweep_seconds = sweep_seconds
        self.on_fired = on_fired
        self.scheduler = BackgroundScheduler(timezone=timezone.utc, job_defaults={"misfire_grace_time": None, "coalesce": True})
        self._wake_at: datetime | None = None
        self._lock = threading.Lock()
        self._cron_jobs: dict[str, str] = {}
        self.fired = 0

    def start(self) -> None:
        """Start the scheduler; overdue timers fire right away."""
        # The sweep is a safety net: when a firing is still running, skipping a tick is
        # right; the scheduler's warning about it is silenced in logs.configure_logging.
        self.scheduler.add_job(self.fire_due, "interval", seconds=self.sweep_seconds, id="sweep", max_instances=1)
        self.scheduler.start()
        self.wake(self.clock())

    def stop(self) -> None:
        """Stop waking; a firing in progress finishes first."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def notice(self, steps: Iterable[Step]) -> None:
        """Wake earlier if a committed step created a timer due before the next wake."""
        due = [c.due_at for s in steps for c in s.commands if isinstance(c, ScheduleTimer)]
        if due:
            self.wake(min(due))

    def notice_holds(self, events: Iterable[Any]) -> None:
        """Wake by the due time of holds just opened (engine.holds.HoldEvent with a `due_at`)."""
        due = [event.due_at for event in events if event.due_at is not None]
        if due:
            self.wake(min(due))

    def wake(self, at: datetime) -> None:
        """Make sure the service looks for due timers no later than `at`."""
        with self._lock:
            if self._wake_at is not None and self._wake_at <= at and self._wake_at > self.clock():
                return
            self._wake_at = at
        if self.scheduler.running:
            # A new wake may come due while the previous one still fires; claims use
            # SKIP LOCKED, so letting both run is safe and nothing is skipped.
            self.scheduler.add_job(self.fire_due, "date", run_date=at, id=WAKE_JOB, replace_existing=True, max_instances=2)

    def fire_due(self) -> int:
        """Claim and fire every timer due now, in batches; returns how many fired."""
        fired = 0
        try:
            while True:
                now = self.clock()
                timers = self.store.claim_due_timers(now, self.batch_size, self.lease_seconds)
                if not timers:
                    break
                self.dispatcher.fire_timers(timers)
                fired += len(timers)
                log.debug("fired %d timer(s)", len(timers))
                if self.on_fired is not None:
                    self.on_fired([(now - t.due_at).total_seconds() for t in timers])
            self._complete_holds()
            upcoming = min((t for t in (self.store.next_timer_due(), self.store.next_hold_due()) if t is not None), default=None)
        except ProcessEngineError as error:
            log.error("firing timers failed, retrying at the next sweep: %s", error)
            return fired
        with self._lock:
            self._wake_at = None
        if upcoming is not None:
            self.wake(upcoming)
        self.fired += fired
        return fired

    def _complete_holds(self) -> int:
        """Claim and complete every trigger hold due now, in batches; returns how many were claimed."""
        claimed = 0
        while holds := self.store.claim_due_holds(self.clock(), self.batch_size, self.lease_seconds):
            self.dispatcher.fire_holds(holds)
            claimed += len(holds)
            log.debug("completed %d due hold(s)", len(holds))
        return claimed

    def schedule_triggers(self, definitions: Iterable[ProcessDefinition]) -> None:
        """(Re)create one cron job per `schedule` definition."""
        wanted = {d.id: d.trigger.cron for d in definitions if d.trigger.type == "schedule" and d.trigger.cron}
        for definition_id in list(self._cron_jobs):
            if self._cron_jobs[definition_id] != wanted.get(definition_id):
                self.scheduler.remove_job(f"cron:{definition_id}")
                del self._cron_jobs[definition_id]
        for definition_id, cron in wanted.items():
            if definition_id in self._cron_jobs:
                continue
            trigger = CronTrigger.from_crontab(cron, timezone=timezone.utc)
            self.scheduler.add_job(self._tick, trigger, args=[definition_id], id=f"cron:{definition_id}", max_instances=1)
            self._cron_jobs[definition_id] = cron

    def _tick(self, definition_id: str) -> None:
        # Crontab ticks are whole minutes, so the truncated time is the same on every
        # replica: the trigger ledger lets only one of them start the instance.
        tick = self.clock().replace(second=0, microsecond=0)
        try:
            self.dispatcher.start_scheduled(definition_id, tick)
        except (ProcessEngineError, KeyError) as error:
            log.error("schedule trigger of %s failed: %s", definition_id, error)
