"""The built-in `notify` action: a message to a named channel, delivered as configured.

A channel is configured as a name and a target, e.g. in the environment as
`NOTIFY_CHANNEL_<NAME>=<target>` (`NOTIFY_CHANNEL_ALERT=mqtt:home/alerts` configures
the channel `alert`). Targets:

    mqtt:<topic>       publish on the engine's MQTT broker (MQTT_URL), QoS 1
                       e.g. mqtt:home/alerts
    kafka:<topic>      produce to the engine's Kafka cluster, keyed by instance id
                       e.g. kafka:process-alerts
    http://... https://...
                       POST to a webhook (Idempotency-Key header, circuit breaker)

Every channel receives the same JSON document:
`{"channel": ..., "message": ..., "instance_id": ..., "activity_id": ...}`.
The broker is always the engine's own, so `mqtt://...` is refused as a target.
A `default_target` with `{channel}` in it (e.g. `mqtt:process-engine/notify/{channel}`)
serves channels that are not configured; without one they fail (not retriable).
The channel name fills one level of an MQTT topic there, so a channel holding /, +, #
or NUL fails (not retriable); in a webhook URL it is percent-encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from process_engine.adapters.actions.base import (
    TOPIC_LEVEL_RULE,
    ActionContext,
    KafkaSink,
    MqttSink,
    config_problems,
    forbidden_in_level,
    guarded,
    is_template,
    required_text,
)
from process_engine.adapters.actions.circuit_breaker import BreakerBoard
from process_engine.adapters.actions.http_request import HttpCaller
from process_engine.domain.errors import ActionError, ConfigError

ENV_PREFIX = "NOTIFY_CHANNEL_"
_SYNTAX = "mqtt:<topic>, kafka:<topic> or an http(s):// webhook URL"


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """Where a channel delivers: `kind` is mqtt, kafka or webhook."""

    kind: str
    destination: str


def parse_channel_target(target: str, setting: str = "notify channel") -> ChannelTarget:
    """Parse `mqtt:<topic>`, `kafka:<topic>` or an http(s) URL.

    Raises:
        ConfigError: any other form; the message names `setting`.
    """
    text = (target or "").strip()
    scheme, _, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme in ("http", "https") and rest.startswith("//") and len(rest) > 2:
        return ChannelTarget("webhook", text)
    if scheme in ("mqtt", "kafka") and rest and not rest.startswith("//"):
        if scheme == "mqtt" and ("+" in rest or "#" in rest):
            raise ConfigError(f"{setting}: MQTT topic {rest!r} must not contain wildcards")
        return ChannelTarget(scheme, rest)
    hint = " (the broker is the engine's own: write mqtt:<topic>)" if text.startswith("mqtt://") else ""
    raise ConfigError(f"{setting} is malformed: expected {_SYNTAX}, got {text!r}{hint}")


def channels_from_environ(environ: Mapping[str, str]) -> dict[str, ChannelTarget]:
    """Every `NOTIFY_CHANNEL_<NAME>` setting, by lower-case channel name.

    Raises:
        ConfigError: a malformed target, naming its variable.
    """
    return {
        name[len(ENV_PREFIX):].lower(): parse_channel_target(value, name)
        for name, value in environ.items()
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    }


class NotifyAction:
    """`notify`: `channel` and `message`."""

    name = "notify"

    def __init__(
        self,
        channels: Mapping[str, str | ChannelTarget],
        mqtt: MqttSink | None = None,
        kafka: KafkaSink | None = None,
        http: HttpCaller | None = None,
        breakers: BreakerBoard | None = None,
        default_target: str | None = None,
    ):
        """Raises ConfigError when a channel needs MQTT or Kafka and that is not configured."""
        self.channels = {name: _target(name, value) for name, value in channels.items()}
        self.default_target = default_target
        self.mqtt, self.kafka, self.breakers = mqtt, kafka, breakers
        self.http = http or HttpCaller(breakers)
        self._owns_http = http is None
        if default_target is not None:
            parse_channel_target(default_target.replace("{channel}", "channel"), "notify default target")
        for name, channel in self.channels.items():
            problem = self._transport_problem(name, channel)
            if problem:
                raise ConfigError(problem)

    def validate(self, config: Mapping[str, Any]) -> list[str]:
        """Load-time problems: no channel or message, a channel that is not configured."""
        problems = config_problems(self.name, config, ("channel", "message"))
        channel = config.get("channel") if not problems else None
        if channel is not None and not is_template(channel) and self.default_target is None:
            if str(channel) not in self.channels:
                problems.append(self._unknown(str(channel)))
        return problems

    def run(self, config: Mapping[str, Any], context: ActionContext) -> dict[str, Any]:
        """Deliver the notification to the channel's target."""
        channel = required_text(self.name, config, "channel")
        document = {
            "channel": channel,
            "message": config.get("message"),
            "instance_id": context.instance_id,
            "activity_id": context.activity_id,
        }
        target = self._resolve(channel)
        self._deliver(target, document, context)
        return {"channel": channel, "kind": target.kind}

    def close(self) -> None:
        """Close the webhook connection pool (when this action created it)."""
        if self._owns_http:
            self.http.close()

    def _resolve(self, channel: str) -> ChannelTarget:
        target = self.channels.get(channel)
        if target is not None:
            return target
        if self.default_target is None:
            raise ActionError(self._unknown(channel), retriable=False)
        kind = parse_channel_target(self.default_target.replace("{channel}", "channel")).kind
        held = forbidden_in_level(channel)
        if kind == "mqtt" and held:
            raise ActionError(f"notify channel {channel!r} holds {held}, so it cannot be a topic level of {self.default_target}; {TOPIC_LEVEL_RULE}", retriable=False)
        try:
            target = parse_channel_target(self.default_target.replace("{channel}", quote(channel, safe="") if kind == "webhook" else channel))
        except ConfigError as error:
            raise ActionError(str(error), retriable=False) from None
        problem = self._transport_problem(channel, target)
        if problem:
            raise ActionError(problem, retriable=False)
        return target

    def _deliver(self, target: ChannelTarget, document: dict[str, Any], context: ActionContext) -> None:
        key, trace, state = context.idempotency_key, context.traceparent, context.tracestate
        if target.kind == "webhook":
            # Webhook URLs often carry a secret (Slack, Teams): errors name the channel instead.
            label = f"notify channel {document['channel']!r} webhook"
            self.http.request("POST", target.destination, body=document, idempotency_key=key, traceparent=trace, tracestate=state, label=label)
        elif target.kind == "mqtt":
            mqtt = self.mqtt
            guarded(self.breakers, mqtt.target, lambda: mqtt.publish(target.destination, document, 1, False, key, traceparent=trace, tracestate=state))
        else:
            kafka = self.kafka
            guarded(
                self.breakers, kafka.target,
                lambda: kafka.publish(target.destination, context.instance_id, document, None, idempotency_key=key, traceparent=trace, tracestate=state),
            )

    def _transport_problem(self, name: str, target: ChannelTarget) -> str | None:
        if target.kind == "mqtt" and self.mqtt is None:
            return f"notify channel {name!r} publishes to MQTT, but MQTT_URL is not set"
        if target.kind == "kafka" and self.kafka is None:
            return f"notify channel {name!r} produces to Kafka, but REDPANDA_BROKERS is not set"
        return None

    def _unknown(self, channel: str) -> str:
        known = ", ".join(sorted(self.channels)) or "none"
        return (
            f"notify channel {channel!r} is not configured (known: {known}); "
            f"set {ENV_PREFIX}{channel.upper()} to {_SYNTAX}"
        )


def _target(name: str, value: str | ChannelTarget) -> ChannelTarget:
    if isinstance(value, ChannelTarget):
        return value
    return parse_channel_target(value, f"notify channel {name!r}")
