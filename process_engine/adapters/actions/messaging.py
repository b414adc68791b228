"""The built-in `mqtt_publish`, `kafka_publish` and `log` actions."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from process_engine.adapters.actions.base import (
    TOPIC_LEVEL_FORBIDDEN,
    TOPIC_LEVEL_RULE,
    ActionContext,
    KafkaSink,
    MqttSink,
    as_flag,
    choice_problem,
    config_problems,
    forbidden_in_level,
    guarded,
    is_template,
    required_text,
)
from process_engine.adapters.actions.circuit_breaker import BreakerBoard
from process_engine.domain.errors import ActionError

ACTION_LOGGER = "process_engine.actions"
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# A `${}` value's /, +, # and NUL are written escaped into the rendered topic, where
# history shows them; the action then refuses the topic. (Rendering happens in the
# walker, before the action runs: the escape is how the action learns of them.)
_TOPIC_ESCAPES = {ord(char): f"%{ord(char):02X}" for char in TOPIC_LEVEL_FORBIDDEN}
_ESCAPED = re.compile("|".join(f"%{ord(char):02X}" for char in TOPIC_LEVEL_FORBIDDEN))


def topic_value(before: str, value: str) -> str:
    """A `${}` value inside an MQTT topic (a templates.Encoder): forbidden characters escaped."""
    return value.translate(_TOPIC_ESCAPES)


class MqttPublishAction:
    """`mqtt_publish`: `topic`, `payload` (dicts and lists as JSON), `qos` (default 1), `retain`."""

    name = "mqtt_publish"
    encoders = {"topic": topic_value}

    def __init__(self, publisher: MqttSink | None, breakers: BreakerBoard | None = None, timeout: float = 10.0):
        self.publisher = publisher
        self.breakers = breakers
        self.timeout = timeout

    def validate(self, config: Mapping[str, Any]) -> list[str]:
        """Load-time problems: no topic, a wildcard topic, a QoS other than 0, 1, 2."""
        problems = config_problems(self.name, config, ("topic",))
        if problems:
            return problems
        literal = re.sub(r"\$\{[^{}]*\}", "", str(config["topic"]))  # what values do not fill
        if "+" in literal or "#" in literal:
            problems.append(f"{self.name} config.topic must not contain wildcards, got {config['topic']!r}")
        return problems + choice_problem(self.name, config, "qos", (0, 1, 2))

    def run(self, config: Mapping[str, Any], context: ActionContext) -> dict[str, Any]:
        """Publish and wait for the broker's acknowledgement."""
        if self.publisher is None:
            raise ActionError("mqtt_publish needs an MQTT broker: set MQTT_URL", retriable=False)
        topic = _checked_topic(required_text(self.name, config, "topic"))
        qos = _qos(config.get("qos", 1))
        retain = as_flag(config.get("retain", False))
        publisher = self.publisher
        guarded(
            self.breakers,
            publisher.target,
            lambda: publisher.publish(
                topic, config.get("payload"), qos, retain, context.idempotency_key, self.timeout,
                traceparent=context.traceparent, tracestate=context.tracestate,
            ),
        )
        return {"topic": topic, "qos": qos}


class KafkaPublishAction:
    """`kafka_publish`: `topic`, `key`, `payload`, optional `headers` mapping."""

    name = "kafka_publish"

    def __init__(self, publisher: KafkaSink | None, breakers: BreakerBoard | None = None):
        self.publisher = publisher
        self.breakers = breakers

    def validate(self, config: Mapping[str, Any]) -> list[str]:
        """Load-time problems: no topic, headers that are not a mapping."""
        problems = config_problems(self.name, config, ("topic",))
        headers = config.get("headers") if not problems else None
        if headers is not None and not isinstance(headers, Mapping):
            problems.append(f"{self.name} config.headers must be a mapping")
        return problems

    def run(self, config: Mapping[str, Any], context: ActionContext) -> dict[str, Any]:
        """Produce and wait for the delivery report."""
        if self.publisher is None:
            raise ActionError("kafka_publish needs a Kafka cluster: set REDPANDA_BROKERS", retriable=False)
        topic = required_text(self.name, config, "topic")
        publisher = self.publisher
        delivery = guarded(
            self.breakers,
            publisher.target,
            lambda: publisher.publish(
                topic, config.get("key"), config.get("payload"), config.get("headers"),
                idempotency_key=context.idempotency_key, traceparent=context.traceparent, tracestate=context.tracestate,
            ),
        )
        partition = getattr(delivery, "partition", None)
        return {"topic": topic, "partition": partition, "offset": getattr(delivery, "offset", None)}


class LogAction:
    """`log`: `message` and `level` (debug, info, warning, error, critical; default info)."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None):
        self.logger = logger or logging.getLogger(ACTION_LOGGER)

    def validate(self, config: Mapping[str, Any]) -> list[str]:
        """Load-time problems: no message, an unknown level."""
        problems = config_problems(self.name, config, ("message",))
        level = config.get("level") if not problems else None
        if level is not None and not is_template(level) and str(level).lower() not in LOG_LEVELS:
            problems.append(f"log config.level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        return problems

    def run(self, config: Mapping[str, Any], context: ActionContext) -> dict[str, Any]:
        """Log the message on `process_engine.actions`, with the instance in `extra`."""
        message = required_text(self.name, config, "message")
        level_name = str(config.get("level") or "info").lower()
        if level_name not in LOG_LEVELS:
            raise ActionError(f"log level {level_name!r} is unknown", retriable=False)
        extra = {
            "instance_id": context.instance_id,
            "activity_id": context.activity_id,
            "definition_id": context.definition_id,
            "idempotency_key": context.idempotency_key,
        }
        self.logger.log(LOG_LEVELS[level_name], "%s", message, extra=extra)
        return {"message": message, "level": level_name}


def _checked_topic(topic: str) -> str:
    """The topic to publish to; a value that held /, +, # or NUL fails the action (not retriable)."""
    escaped = sorted(set(_ESCAPED.findall(topic)))
    if escaped:
        held = forbidden_in_level("".join(chr(int(code[1:], 16)) for code in escaped))
        raise ActionError(f"mqtt_publish topic {topic!r}: a ${{}} value in it holds {held} (written {', '.join(escaped)}); {TOPIC_LEVEL_RULE}", retriable=False)
    held = forbidden_in_level(topic.replace("/", ""))
    if held:  # a whole topic from one variable, where / is fine but wildcards are not
        raise ActionError(f"mqtt_publish topic {topic!r} holds {held}: a topic to publish to may not contain wildcards (+, #) or NUL", retriable=False)
    return topic


def _qos(value: Any) -> int:
    try:
        qos = int(value)
    except (TypeError, ValueError):
        qos = -1
    if qos not in (0, 1, 2) or isinstance(value, bool):
        raise ActionError(f"mqtt_publish qos must be 0, 1 or 2, got {value!r}", retriable=False)
    return qos
