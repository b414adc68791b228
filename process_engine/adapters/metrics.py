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

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
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
        self.consumer_lag = Gauge(
            "process_engine_consumer_lag", "Messages not yet committed, per assigned partition.", ["topic", "partition"], registry=r
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

    @never_raises
    def batch_done(self, result: Any, count: int, seconds: float) -> None:
        """One batch of `count` messages committed in `seconds`; `result` is its BatchResult."""
        self.consumed.inc(count)
        self.dead_lettered.inc(getattr(result, "dead_lettered", 0))
        self.duplicates.inc(getattr(result, "duplicates", 0))
        self.step_latency.observe(seconds)

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


class ConsumerLagSampler:
    """Samples the lag of this replica's partitions: log end offset minus committed offset.

    Runs on its own thread with its own AdminClient calls, so it keeps reporting while
    the consumer is stuck (for example while the database is down): that is when lag matters.
    """

    def __init__(
        self,
        admin: AdminClient,
        group_id: str,
        assigned: Callable[[], Sequence[TopicPartition]],
        metrics: EngineMetrics,
        interval: float = 5.0,
        timeout: float = 2.0,
    ):
        self.admin = admin
        self.group_id = group_id
        self.assigned = assigned
        self.metrics = metrics
        self.interval = interval
        self.timeout = timeout

    def run(self, stop: threading.Event) -> None:
        """Sample every `interval` seconds until stopped; a failed sample is skipped."""
        while not stop.wait(self.interval):
            try:
                self.sample()
            except Exception as error:  # the broker may be away; the next sample retries
                log.debug("consumer lag sample skipped: %s", error)

    def sample(self) -> dict[tuple[str, int], int]:
        """Query the broker once and update the gauge; returns the lags."""
        partitions = [TopicPartition(p.topic, p.partition) for p in self.assigned()]
        lags: dict[tuple[str, int], int] = {}
        if partitions:
            committed = self._committed(partitions)
            ends = self._offsets(partitions, OffsetSpec.latest())
            unset = [p for p in partitions if committed.get((p.topic, p.partition), -1) < 0]
            starts = self._offsets(unset, OffsetSpec.earliest()) if unset else {}
            for key, end in ends.items():
                start = committed.get(key, -1)
                if start < 0:
                    start = starts.get(key, 0)
                lags[key] = max(end - start, 0)
        self.metrics.lag_sampled(lags)
        return lags

    def _committed(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        request = [ConsumerGroupTopicPartitions(self.group_id, partitions)]
        futures = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
        result = futures[self.group_id].result(self.timeout + 1)
        return {(p.topic, p.partition): p.offset for p in result.topic_partitions if p.error is None}

    def _offsets(self, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        futures = self.admin.list_offsets({p: spec for p in partitions}, request_timeout=self.timeout)
        found = {}
        for partition, future in futures.items():
            try:
                found[(partition.topic, partition.partition)] = future.result(self.timeout + 1).offset
            except KafkaException as error:
                log.debug("no end offset for %s[%s]: %s", partition.topic, partition.partition, error)
        return found


__all__ = ["ConsumerLagSampler", "EngineMetrics", "METRICS_CONTENT_TYPE", "never_raises", "step_context"]
