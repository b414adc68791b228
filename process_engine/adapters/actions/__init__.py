"""The service actions: built-ins (mqtt_publish, log, notify, kafka_publish, http) and plug-ins.

`builtin_registry(...)` wires the built-ins to the engine's publishers;
`ActionRegistry.load_entry_points()` adds custom actions (see `registry`).
"""

from __future__ import annotations

from collections.abc import Mapping

from process_engine.adapters.actions.base import Action, ActionContext, KafkaSink, MqttSink
from process_engine.adapters.actions.circuit_breaker import BreakerBoard
from process_engine.adapters.actions.destinations import AllowList, DestinationPolicy
from process_engine.adapters.actions.http_request import HttpAction, HttpCaller
from process_engine.adapters.actions.messaging import KafkaPublishAction, LogAction, MqttPublishAction
from process_engine.adapters.actions.notify import (
    ChannelTarget,
    NotifyAction,
    channels_from_environ,
    parse_channel_target,
)
from process_engine.adapters.actions.registry import ENTRY_POINT_GROUP, ActionRegistry

__all__ = [
    "ENTRY_POINT_GROUP",
    "Action",
    "ActionContext",
    "ActionRegistry",
    "AllowList",
    "ChannelTarget",
    "DestinationPolicy",
    "HttpAction",
    "HttpCaller",
    "KafkaPublishAction",
    "KafkaSink",
    "LogAction",
    "MqttPublishAction",
    "MqttSink",
    "NotifyAction",
    "builtin_registry",
    "channels_from_environ",
    "parse_channel_target",
]


def builtin_registry(
    mqtt: MqttSink | None = None,
    kafka: KafkaSink | None = None,
    channels: Mapping[str, str | ChannelTarget] | None = None,
    breakers: BreakerBoard | None = None,
    http: HttpCaller | None = None,
    notify_default_target: str | None = None,
    destinations: DestinationPolicy | None = None,
) -> ActionRegistry:
    """A registry of the five built-in actions sharing one HTTP caller and breaker board.

    `mqtt` / `kafka` may be None when not configured: their actions then fail
    (not retriable) naming the missing setting. `destinations` is where HTTP may
    connect (default: anywhere but loopback, link-local and unspecified addresses).
    """
    breakers = breakers if breakers is not None else BreakerBoard()
    http = http or HttpCaller(breakers, destinations)
    return ActionRegistry([
        MqttPublishAction(mqtt, breakers),
        LogAction(),
        NotifyAction(channels or {}, mqtt, kafka, http, breakers, notify_default_target),
        KafkaPublishAction(kafka, breakers),
        HttpAction(http),
    ])
