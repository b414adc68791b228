"""The one place that wires concrete adapters together."""

from __future__ import annotations

from process_engine.domain.building import Extensions

BUILT_IN_ACTIONS = ("mqtt_publish", "log", "notify", "kafka_publish", "http")


def definition_extensions() -> Extensions:
    """Action names and custom activity types that definitions may use."""
    return Extensions(actions={name: None for name in BUILT_IN_ACTIONS})
