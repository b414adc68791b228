"""What every service action shares: its context, the Action protocol and config helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from process_engine.adapters.actions.circuit_breaker import BreakerBoard
from process_engine.domain.errors import ActionError
from process_engine.ports import PendingAction

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Who runs an action: passed to every `Action.run`."""

    idempotency_key: str
    instance_id: str
    activity_id: str
    attempt: int
    definition_id: str | None = None
    traceparent: str | None = None  # W3C trace context the action passes on beside its idempotency key
    tracestate: str | None = None

    @classmethod
    def from_pending(
        cls, pending: PendingAction, definition_id: str | None = None, traceparent: str | None = None, tracestate: str | None = None,
    ) -> ActionContext:
        """The context of an outbox row."""
        return cls(
            idempotency_key=pending.idempotency_key,
            instance_id=pending.instance_id,
            activity_id=pending.activity_id,
            attempt=pending.attempt,
            definition_id=definition_id,
            traceparent=traceparent,
            tracestate=tracestate,
        )


class Action(Protocol):
    """A service action. May also define `validate(config) -> list[str]` and `close()`."""

    name: str

    def run(self, config: Mapping[str, Any], context: ActionContext) -> Any:
        """Do the work; return a JSON-able result. Raise ActionError on failure."""


class MqttSink(Protocol):
    """What actions need from an MQTT publisher (`adapters.mqtt.publisher.MqttPublisher`)."""

    target: str

    def publish(
        self,
        topic: str,
        payload: Any,
        qos: int = 1,
        retain: bool = False,
        idempotency_key: str | None = None,
        timeout: float = 10.0,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        """Publish and wait for the acknowledgement."""


class KafkaSink(Protocol):
    """What actions need from a Kafka publisher (`adapters.kafka.producer.KafkaPublisher`)."""

    target: str

    def publish(
        self,
        topic: str,
        key: Any,
        payload: Any,
        headers: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Any:
        """Produce and wait for the delivery report."""


# What a `${}` value inside an MQTT topic may not hold: it would add levels or wildcards.
TOPIC_LEVEL_FORBIDDEN = {"/": "'/'", "+": "'+'", "#": "'#'", "\x00": "NUL"}
TOPIC_LEVEL_RULE = "a value in an MQTT topic may not contain /, +, # or NUL (it would change the topic's levels)"


def forbidden_in_level(value: str) -> str:
    """The characters of `value` an MQTT topic level cannot hold, e.g. "'/' and '#'"; empty when none."""
    return " and ".join(shown for char, shown in TOPIC_LEVEL_FORBIDDEN.items() if char in value)


def is_template(value: Any) -> bool:
    """A `${...}` string: only known after interpolation, so load-time checks skip it."""
    return isinstance(value, str) and "${" in value


def config_problems(action: str, config: Any, required: tuple[str, ...]) -> list[str]:
    """Load-time problems: config not a mapping, or required fields missing or empty."""
    if not isinstance(config, Mapping):
        return [f"{action} needs a config mapping"]
    return [
        f"{action} needs config.{name}"
        for name in required
        if config.get(name) is None or config.get(name) == ""
    ]


def required_text(action: str, config: Mapping[str, Any], name: str) -> str:
    """A required config value as text; a missing one is a non-retriable ActionError."""
    value = config.get(name) if isinstance(config, Mapping) else None
    if value is None or value == "":
        raise ActionError(f"{action} needs config.{name}", retriable=False)
    return str(value)


def choice_problem(action: str, config: Mapping[str, Any], name: str, allowed: tuple) -> list[str]:
    """A load-time problem when config[name] is set, not a template, and not one of `allowed`."""
    value = config.get(name)
    if value is None or is_template(value) or (value in allowed and not isinstance(value, bool)):
        return []
    return [f"{action} config.{name} must be one of {', '.join(map(str, allowed))}, got {value!r}"]


def as_flag(value: Any) -> bool:
    """A boolean config value; interpolated text `true`/`false` counts too."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return bool(value)


def guarded(breakers: BreakerBoard | None, target: str, function: Callable[[], T]) -> T:
    """Call `function` through the breaker of `target`, when there are breakers."""
    if breakers is None:
        return function()
    return breakers.call(target, function)
