"""The one place that wires concrete adapters together."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from process_engine.adapters.actions import ActionContext, ActionRegistry, DestinationPolicy, builtin_registry
from process_engine.adapters.actions.outbox import OutboxWorker
from process_engine.adapters.definitions.folder import DefinitionFolder
from process_engine.adapters.kafka.consumer import ConsumerSettings, TriggerConsumer
from process_engine.adapters.kafka.lag import ConsumerLagSampler
from process_engine.adapters.kafka.producer import KafkaPublisher, kafka_config
from process_engine.adapters.mqtt.publisher import MqttPublisher, MqttSettings
from process_engine.adapters.observability.metrics import EngineMetrics
from process_engine.adapters.observability.tracing import tracing_from_environment
from process_engine.adapters.postgres.active_keys import PostgresActiveKeys
from process_engine.adapters.postgres.migrations import migrate
from process_engine.adapters.postgres.store import PostgresInstanceStore
from process_engine.adapters.postgres.timescale import configure_history
from process_engine.adapters.scheduler.timers import TimerService
from process_engine.domain.errors import ConfigError, ProcessEngineError
from process_engine.domain.extensions import Extensions
from process_engine.domain.instance import InstanceState
from process_engine.engine import RunAction
from process_engine.ports import IncomingMessage, Step
from process_engine.runtime.dispatcher import BatchResult, Dispatcher, PreparedBatch, utc_now
from process_engine.runtime.event_ids import new_event_id
from process_engine.runtime.message_decoding import MessageLimits
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.runtime.tracing import Tracing
from process_engine.settings import DEFAULT_NOTIFY_TARGET, Settings

log = logging.getLogger("process_engine")
ACTIVITY_ENTRY_POINTS = "process_engine.activities"
COMPENSATION_ENTRY_POINTS = "process_engine.compensations"
# Actions that are local and cheap run inside the step, saving an outbox round trip.
INLINE_ACTIONS = ("log",)
# Readiness asks the broker at most this often; probes in between get the cached answer.
BROKER_CHECK_SECONDS = 2.0


def custom_activity_types(entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> dict[str, Any]:
    """Activity types plugged in through the `process_engine.activities` entry point group.

    Each entry point names a class or factory called with no arguments; what it returns
    has `execute(options, variables) -> dict` (pure: it runs inside the walker) and may
    have `validate(options) -> list[str]`.
    """
    return _plug_ins("activity type", ACTIVITY_ENTRY_POINTS, entry_points)


def custom_compensation_handlers(entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> dict[str, Any]:
    """Compensation handlers plugged in through the `process_engine.compensations` entry point group.

    What each returns has `compensate(context) -> {"action": name, "config": {...}} or None`
    (pure: it runs inside the walker; the context holds the activity, its action, the
    handler's options, the variables and the action's result) and may have
    `validate(options) -> list[str]`.
    """
    return _plug_ins("compensation handler", COMPENSATION_ENTRY_POINTS, entry_points)


def _plug_ins(kind: str, group: str, entry_points: Iterable[importlib.metadata.EntryPoint] | None) -> dict[str, Any]:
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=group)
    found = {}
    for entry_point in entry_points:
        try:
            found[entry_point.name] = entry_point.load()()
        except Exception as error:
            raise ConfigError(f"{kind} {entry_point.name} = {entry_point.value} failed to load: {error}") from error
    return found


def definition_extensions(actions: ActionRegistry | None = None) -> Extensions:
    """Action names (with their config checks and value encoders) and custom activity types definitions may use."""
    if actions is None:
        actions = builtin_registry(notify_default_target=DEFAULT_NOTIFY_TARGET)
        actions.load_entry_points()
    checks = {name: (lambda config, name=name: actions.validate(name, config)) for name in actions.names()}
    return Extensions(
        actions=checks, activity_types=custom_activity_types(), encoders=actions.encoders(),
        compensation_handlers=custom_compensation_handlers(),
    )


def inline_runner(
    actions: ActionRegistry, name: str, on_outcome: Callable[[str, bool], None] | None = None
) -> Callable[[RunAction, InstanceState], Any]:
    """Run an inline action with the same context the outbox gives; `on_outcome(name, ok)` counts it."""

    def run(command: RunAction, instance: InstanceState) -> Any:
        context = ActionContext(command.idempotency_key, instance.id, command.activity_id, command.attempt, instance.definition_id)
        try:
            result = actions.run(name, command.config, context)
        except Exception:
            if on_outcome is not None:
                on_outcome(name, False)
            raise
        if on_outcome is not None:
            on_outcome(name, True)
        return result

    return run


class TimedDispatcher(Dispatcher):
    """The dispatcher, reporting each committed batch of trigger messages and how long it took."""

    def __init__(self, *args: Any, on_batch: Callable[[BatchResult, int, float], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_batch = on_batch

    def handle_batch(self, messages: Sequence[IncomingMessage]) -> BatchResult:
        """As Dispatcher.handle_batch; the time covers walking and the commit."""
        started = time.perf_counter()
        result = super().handle_batch(messages)
        self.on_batch(result, len(messages), time.perf_counter() - started)
        return result

    def commit_prepared(self, prepared: PreparedBatch) -> BatchResult:
        """As Dispatcher.commit_prepared; the time covers preparing (walking) and the commit."""
        result = super().commit_prepared(prepared)
        self.on_batch(result, len(prepared.messages), time.perf_counter() - prepared.began)
        return result


@dataclass
class Engine:
    """The running service: consumer, timers, outbox, hot reload, metrics (HTTP is served by service.py)."""

    settings: Settings
    clock: Callable[[], datetime] = utc_now
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    step_listeners: list[Callable[[list[Step]], None]] = field(default_factory=list)
    hold_listeners: list[Callable[[list[Any]], None]] = field(default_factory=list)  # engine.holds.HoldEvent lists
    http_port: int | None = None  # the bound port, once service.py serves HTTP
    tracing: Tracing | None = None  # None: from the OTEL_* environment (off when none is set)

    def build(self) -> None:
        """Connect, migrate and wire every part; nothing runs yet."""
        settings = self.settings
        migrate(settings.database_url)
        configure_history(settings.database_url, settings.history_retention, settings.history_compress_after)
        self.store = PostgresInstanceStore.connect(settings.database_url)
        self.active_keys = PostgresActiveKeys.start(settings.database_url)
        self.metrics = EngineMetrics()
        security = kafka_config(settings.kafka_security)
        self.mqtt = MqttPublisher(MqttSettings.from_url(settings.mqtt_url)) if settings.mqtt_url else None
        self.kafka = KafkaPublisher({"bootstrap.servers": settings.kafka_brokers, **security})
        self.destinations = DestinationPolicy.from_setting(settings.http_action_allow)
        self.destinations.serving(settings.http_host, settings.http_port)
        self.actions = builtin_registry(
            self.mqtt, self.kafka, dict(settings.notify_channels),
            notify_default_target=settings.notify_default_target, destinations=self.destinations,
        )
        self.actions.load_entry_points()
        self.extensions = definition_extensions(self.actions)
        self.registry = DefinitionRegistry(self.store, self.extensions)
        if self.tracing is None:
            self.tracing = tracing_from_environment(os.environ)
        inline = {name: inline_runner(self.actions, name, self.metrics.action_done) for name in INLINE_ACTIONS}
        # Time-ordered instance ids: new rows land at the right edge of the primary key's index.
        self.dispatcher = TimedDispatcher(
            self.store, self.registry, clock=self.clock, new_id=new_event_id, inline_actions=inline,
            on_steps=self._steps_committed, on_batch=self.metrics.batch_done,
            limits=MessageLimits(max_bytes=settings.max_message_bytes), on_holds=self._holds_committed,
            refresh_interval=settings.history_refresh_interval,
            trace_of=self.tracing.instance_trace if self.tracing.enabled else None, active_keys=self.active_keys,
        )
        self.folder = DefinitionFolder(settings.definitions_path, self.registry, self.extensions)
        self.timers = TimerService(self.store, self.dispatcher, clock=self.clock, on_fired=self.metrics.timers_fired)
        self.outbox = OutboxWorker(self.store, self.dispatcher, self.actions, clock=self.clock, on_outcome=self.metrics.action_done,
                                   tracing=self.tracing)
        self.dispatcher.claimer = self.outbox  # it takes the action rows a commit writes, and is woken for the rest
        consumer_settings = ConsumerSettings(settings.kafka_brokers, settings.group_id, settings.batch_size, security=security)
        self.consumer = TriggerConsumer(consumer_settings, self.dispatcher, self.registry)
        self.admin = AdminClient({"bootstrap.servers": settings.kafka_brokers, **security}, logger=logging.getLogger("process_engine.librdkafka"))
        self.lag_sampler = ConsumerLagSampler(self.admin, settings.group_id, lambda: self.consumer.assigned, self.metrics)
        self._broker_lock = threading.Lock()
        self._broker_check: tuple[float, dict[str, Any]] | None = None

    def serving_http(self, host: str, port: int) -> None:
        """The HTTP server is bound (port 0 picks one): actions may not call that address."""
        self.http_port = port
        self.destinations.serving(host, port)

    def _steps_committed(self, steps: list[Step]) -> None:
        self.timers.notice(steps)
        self.metrics.steps_committed(steps)
        if self.tracing is not None and self.tracing.enabled:
            self.tracing.steps_committed(steps)
        for listener in self.step_listeners:
            listener(steps)

    def _holds_committed(self, events: list[Any]) -> None:
        self.timers.notice_holds(events)
        self.metrics.holds_changed(events)
        for listener in self.hold_listeners:
            listener(events)

    def start(self) -> None:
        """Load definitions and start every worker."""
        self.folder.scan()
        for error in self.folder.errors():
            log.error("invalid definition: %s", error.location_text())
        log.info("active definitions: %s", ", ".join(d.id for d in self.registry.active()) or "none")
        log.info("%s", self.destinations.summary())
        if self.mqtt is not None:
            self.mqtt.start(wait=5.0)
        self.timers.start()
        self.timers.schedule_triggers(self.registry.active())
        self._spawn("consumer", self.consumer.run, self.stop_event)
        self._spawn("outbox", self.outbox.run, self.stop_event)
        self._spawn("definitions", self.folder.watch, self.stop_event, 2.0, self._definitions_changed)
        self._spawn("consumer-lag", self.lag_sampler.run, self.stop_event)

    def _definitions_changed(self) -> None:
        self.timers.schedule_triggers(self.registry.active())

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=self._guard, args=(name, target, *args), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _guard(self, name: str, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except Exception:
            log.exception("%s stopped unexpectedly; stopping the engine", name)
            self.stop_event.set()

    # -- probes ---------------------------------------------------------------------
    def alive(self) -> tuple[bool, str]:
        """Liveness: every worker thread and the timer scheduler run; the reason when not."""
        if self.stop_event.is_set():
            return False, "stopping"
        dead = [thread.name for thread in self.threads if not thread.is_alive()]
        if not self.timers.scheduler.running:
            dead.append("timers")
        if dead:
            return False, f"worker(s) stopped: {', '.join(dead)}"
        return True, "ok"

    def readiness(self) -> dict[str, dict[str, Any]]:
        """Readiness: each check as {"ok": bool, ...}; the broker's answer is cached briefly."""
        alive, reason = self.alive()
        return {
            "workers": {"ok": True} if alive else {"ok": False, "error": reason},
            "database": self._check_database(),
            "broker": self._check_broker(),
            "mqtt": self._check_mqtt(),
        }

    def _check_database(self) -> dict[str, Any]:
        try:
            self.store.ping()
        except ProcessEngineError as error:
            return {"ok": False, "error": f"{error}; check DATABASE_URL"}
        return {"ok": True}

    def _check_broker(self) -> dict[str, Any]:
        with self._broker_lock:
            cached = self._broker_check
            if cached is not None and time.monotonic() - cached[0] < BROKER_CHECK_SECONDS:
                return cached[1]
            try:
                self.admin.list_topics(timeout=BROKER_CHECK_SECONDS)
                check: dict[str, Any] = {"ok": True}
            except KafkaException as error:
                check = {"ok": False, "error": f"no answer from {self.settings.kafka_brokers} ({error}); check REDPANDA_BROKERS"}
            self._broker_check = (time.monotonic(), check)
            return check

    def _check_mqtt(self) -> dict[str, Any]:
        if self.mqtt is None:
            return {"ok": True, "skipped": "MQTT is off (MQTT_URL is empty)"}
        if self.mqtt.is_connected():
            return {"ok": True}
        return {"ok": False, "error": f"not connected to {self.mqtt.target}; check MQTT_URL and that the broker runs"}

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: the batch in hand commits, actions in flight finish, then close."""
        self.stop_event.set()
        self.outbox.stop_waiting()
        for thread in self.threads:
            thread.join(timeout)
        self.timers.stop()
        self.actions.close()
        if self.mqtt is not None:
            self.mqtt.close()
        self.kafka.close()
        self.active_keys.close()
        self.store.close()
        shutdown = getattr(self.tracing, "shutdown", None)
        if shutdown is not None:  # export the spans still buffered
            shutdown()
