"""Prometheus metrics of one engine, on its own CollectorRegistry, and the log line per instance.

The hooks are called by the workers after their work is committed, so every count
reflects what the database holds. Each hook swallows its own errors: a metric must
never stop a worker.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from process_engine.engine.commands import InstanceCompleted, InstanceFailed, RecordHistory
from process_engine.ports import PendingAction, Step

log = logging.getLogger("process_engine.instances")
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
# 1 ms .. 10 s: a batch commit or a timer's delay past its due time.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# 10 ms .. 1 day: instances wait on timers of minutes or hours.
PROCESS_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)

F = TypeVar("F", bound=Callable[..., None])


def never_raises(hook: F) -> F:
    """Log a hook's error instead of raising it into the worker that called it."""

    @functools.wraps(hook)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            log.exception("metrics hook %s failed", hook.__name__)

    return guarded  # type: ignore[return-value]


class EngineMetrics:
    """Every metric the engine exports; the methods are the hooks the workers call."""

    content_type = METRICS_CONTENT_TYPE

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter("process_engine_messages_consumed", "Trigger messages consumed and committed.", registry=r)
        self.dead_lettered = Counter("process_engine_messages_dead_lettered", "Messages recorded as dead letters and skipped.", registry=r)
        self.duplicates = Counter("process_engine_messages_duplicate", "Redelivered messages skipped by the trigger ledger.", registry=r)
        by_definition = ["definition"]
        self.started = Counter("process_engine_instances_started", "Instances started.", by_definition, registry=r)
        self.completed = Counter("process_engine_instances_completed", "Instances that reached an end.", by_definition, registry=r)
        self.failed = Counter("process_engine_instances_failed", "Instances that failed.", by_definition, registry=r)
        self.step_latency = Histogram(
            "process_engine_step_latency_seconds", "Time to walk and commit one batch of trigger messages.", buckets=FAST_BUCKETS, registry=r
        )
        self.completion_latency = Histogram(
            "process_engine_trigger_to_completion_seconds",
            "Time from an instance's start to its end.",
            by_definition,
            buckets=PROCESS_BUCKETS,
            registry=r,
        )
        self.timer_lateness = Histogram(
            "process_engine_timer_lateness_seconds", "How long after its due time a timer fired.", buckets=FAST_BUCKETS, registry=r
        )
        self.action_attempts = Counter("process_engine_action_attempts", "Service action attempts.", ["action"], registry=r)
        self.action_failures = Counter("process_engine_action_failures", "Service action attempts that failed.", ["action"], registry=r)
        self.compensations = Counter(
            "process_engine_compensations", "Compensations whose outcome arrived, by definition and outcome (done, failed).",
            ["definition", "outcome"], registry=r,
        )
        self.consumer_lag = Gauge(
            "process_engine_consumer_lag", "Messages not yet committed, per assigned partition.", ["topic", "partition"], registry=r
        )
        self.holds_opened = Counter("process_engine_trigger_holds_opened", "Trigger `for` holds opened by a matching message.", by_definition, registry=r)
        self.holds_dropped = Counter(
            "process_engine_trigger_holds_dropped", "Trigger holds and counts dropped before starting, by reason.", ["definition", "reason"], registry=r
        )
        self.holds_completed = Counter(
            "process_engine_trigger_holds_completed", "Trigger holds that started an instance, by rule (for, count).", ["definition", "rule"], registry=r
        )
        self.messages_held = Counter(
            "process_engine_trigger_messages_held", "Matching messages held by an open hold or counted, by rule.", ["definition", "rule"], registry=r
        )
        self.starts_suppressed = Counter(
            "process_engine_trigger_starts_suppressed", "Matching messages that started nothing, by reason (cooldown, no_key).", ["definition", "reason"], registry=r
        )
        self._lag_labels: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    @never_raises
    def steps_committed(self, steps: Sequence[Step]) -> None:
        """Count started, completed and failed instances, and log one line for each."""
        # At thousands of instances a second the log context is worth building only when used,
        # and a counter is bumped once per definition, not once per instance.
        chatty = log.isEnabledFor(logging.INFO)
        started: dict[str, int] = {}
        completed: dict[str, int] = {}
        latencies: dict[str, list[float]] = {}
        for step in steps:
            instance = step.instance
            if instance.compensations:  # rare, so the commands are looked at only then
                self._count_compensations(instance.definition_id, step.commands)
            if step.expected_version is None:
                # A queued instance is counted when it is created: its later start is not a new instance.
                started[instance.definition_id] = started.get(instance.definition_id, 0) + 1
                if chatty:
                    queued = any(isinstance(c, RecordHistory) and c.event_type == "queued" for c in step.commands)
                    log.info("instance %s of %s %s", instance.id, instance.definition_id, "queued" if queued else "started", extra=step_context(step))
            if instance.status == "running" or instance.status == "suspended":
                continue  # only a finished instance has an InstanceCompleted or InstanceFailed
            for command in step.commands:
                if isinstance(command, InstanceCompleted):
                    completed[instance.definition_id] = completed.get(instance.definition_id, 0) + 1
                    if instance.started_at is not None:
                        seconds = (command.at - instance.started_at).total_seconds()
                        latencies.setdefault(instance.definition_id, []).append(max(seconds, 0.0))
                    if chatty:
                        log.info("instance %s of %s completed", instance.id, instance.definition_id, extra=step_context(step))
                elif isinstance(command, InstanceFailed):
                    self.failed.labels(instance.definition_id).inc()
                    log.warning("instance %s of %s failed: %s", instance.id, instance.definition_id, command.reason, extra=step_context(step))
        for definition_id, count in started.items():
            self.started.labels(definition_id).inc(count)
        for definition_id, count in completed.items():
            self.completed.labels(definition_id).inc(count)
        for definition_id, seconds in latencies.items():
            histogram = self.completion_latency.labels(definition_id)
            for value in seconds:
                histogram.observe(value)

    def _count_compensations(self, definition_id: str, commands: Sequence[Any]) -> None:
        for command in commands:
            if isinstance(command, RecordHistory) and command.event_type in ("compensated", "compensation_failed"):
                self.compensations.labels(definition_id, "done" if command.event_type == "compensated" else "failed").inc()

    @never_raises
    def batch_done(self, result: Any, count: int, seconds: float) -> None:
        """One batch of `count` messages committed in `seconds`; `result` is its BatchResult."""
        self.consumed.inc(count)
        self.dead_lettered.inc(getattr(result, "dead_lettered", 0))
        self.duplicates.inc(getattr(result, "duplicates", 0))
        self.step_latency.observe(seconds)

    @never_raises
    def holds_changed(self, events: Iterable[Any]) -> None:
        """What the trigger hold rules did in one committed unit of work (engine.holds.HoldEvent)."""
        tally: dict[tuple[str, str, str], int] = {}
        for event in events:
            key = (event.kind, event.definition_id, event.reason)
            tally[key] = tally.get(key, 0) + 1
        counters = {"dropped": self.holds_dropped, "completed": self.holds_completed, "held": self.messages_held, "suppressed": self.starts_suppressed}
        for (kind, definition_id, reason), count in tally.items():
            if kind == "opened":
                self.holds_opened.labels(definition_id).inc(count)
            elif kind in counters:
                counters[kind].labels(definition_id, reason).inc(count)

    @never_raises
    def timers_fired(self, latenesses: Iterable[float]) -> None:
        """Timers fired, each `lateness` seconds after it was due."""
        for lateness in latenesses:
            self.timer_lateness.observe(max(lateness, 0.0))

    @never_raises
    def action_done(self, action: PendingAction | str, ok: bool) -> None:
        """One attempt of a service action (an outbox row, or an inline action's name)."""
        name = action if isinstance(action, str) else action.action
        self.action_attempts.labels(name).inc()
        if not ok:
            self.action_failures.labels(name).inc()

    @never_raises
    def lag_sampled(self, lags: dict[tuple[str, int], int]) -> None:
        """Set the lag of every assigned partition; partitions no longer assigned are dropped."""
        with self._lock:
            labels = {(topic, str(partition)): lag for (topic, partition), lag in lags.items()}
            for gone in self._lag_labels - set(labels):
                self.consumer_lag.remove(*gone)
            for key, lag in labels.items():
                self.consumer_lag.labels(*key).set(lag)
            self._lag_labels = set(labels)


def step_context(step: Step) -> dict[str, Any]:
    """The log fields that tie a line to its instance and to the message or timer that caused it."""
    instance = step.instance
    return {
        "instance_id": instance.id,
        "definition_id": instance.definition_id,
        "activity_id": instance.current_activity,
        "correlation_id": step.correlation_id,
        "correlation_key": instance.correlation_key,
        "causation_id": step.causation_id,
    }


__all__ = ["EngineMetrics", "METRICS_CONTENT_TYPE", "never_raises", "step_context"]
