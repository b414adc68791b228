"""What the console's pages show, as plain values: definitions, instances, dead letters.

The templates only lay these out; everything here is unit-testable without a server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from process_engine.adapters.http.flowchart import flowchart
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.instance import InstanceState
from process_engine.ports import DeadLetter, StoredDefinition

MAX_PAYLOAD_CHARS = 64 * 1024
# Trigger keys the Trigger dataclass carries; any other key of the file's trigger (for,
# count, within, cooldown, ...) is shown as written.
TRIGGER_FIELDS = ("type", "topic", "condition", "correlate", "mode", "cron")
# What a person may do to an instance in each status (the API decides; 409 otherwise).
CONTROLS_BY_STATUS: dict[str, tuple[str, ...]] = {
    "running": ("suspend", "cancel"),
    "suspended": ("resume", "cancel"),
    "failed": ("retry",),
}


@dataclass(frozen=True, slots=True)
class VersionView:
    """One stored version of a definition."""

    version: int
    created_at: datetime | None
    content_hash: str
    active: bool


@dataclass(frozen=True, slots=True)
class DefinitionView:
    """One definition's card: trigger, variables, versions and its graph."""

    id: str
    name: str
    version: int
    file: str | None
    trigger: list[tuple[str, str]]
    variables: list[tuple[str, str]]
    versions: list[VersionView]
    chart: str
    visits: int


def definition_view(
    definition: ProcessDefinition,
    visits: Mapping[tuple[str, str], int],
    versions: Sequence[StoredDefinition],
    active_version: int | None,
) -> DefinitionView:
    """A definition with its graph, counting the instances that visited each activity."""
    counts = {activity_id: visits.get((definition.id, activity_id), 0) for activity_id in definition.activities}
    return DefinitionView(
        id=definition.id,
        name=definition.name,
        version=definition.version,
        file=definition.source_file,
        trigger=trigger_rows(definition),
        variables=[(v.name, f"from {v.source.source}" if v.source is not None else f"= {_json(v.value)}") for v in definition.variables],
        versions=[VersionView(v.version, v.created_at, v.content_hash[:12], v.version == active_version) for v in versions],
        chart=flowchart(definition, counts=counts),
        visits=counts.get(definition.start_activity, 0),
    )


def trigger_rows(definition: ProcessDefinition) -> list[tuple[str, str]]:
    """The trigger as (setting, value) rows: the parsed fields, then any other key of the file."""
    trigger = definition.trigger
    values = {
        "type": trigger.type,
        "topic": trigger.topic,
        "condition": trigger.condition.source if trigger.condition is not None else None,
        "correlate": trigger.correlate.source if trigger.correlate is not None else None,
        "mode": trigger.mode if trigger.is_topic else None,
        "cron": trigger.cron,
    }
    rows = [(name, str(value)) for name, value in values.items() if value not in (None, "")]
    if trigger.is_topic and trigger.correlate is None:
        rows.append(("correlate", "(none: the Kafka message key, * for unkeyed messages)"))
    raw = definition.raw.get("trigger") if isinstance(definition.raw, Mapping) else None
    if isinstance(raw, Mapping):
        rows.extend((str(key), _text(value)) for key, value in raw.items() if key not in TRIGGER_FIELDS)
    return rows


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One line of the instance list."""

    id: str
    definition: str
    status: str
    current_activity: str | None
    correlation_key: str | None
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None


def instance_row(instance: InstanceState) -> InstanceRow:
    """An instance as the list shows it."""
    return InstanceRow(
        id=instance.id,
        definition=f"{instance.definition_id} v{instance.definition_version}",
        status=instance.status,
        current_activity=instance.current_activity if instance.active else None,
        correlation_key=instance.correlation_key,
        started_at=instance.started_at,
        completed_at=instance.completed_at,
        error=instance.error,
    )


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """One dead-lettered message: where it was, why it was skipped, and what it held."""

    topic: str
    partition: int
    offset: int
    reason: str
    definition_id: str | None
    key: str | None
    payload: str


def dead_letter_view(letter: DeadLetter) -> DeadLetterView:
    """A dead letter with its key and payload as readable text (JSON indented when it is JSON)."""
    coordinate = letter.coordinate
    key = readable_bytes(letter.key) if letter.key is not None else None
    return DeadLetterView(coordinate.topic, coordinate.partition, coordinate.offset, letter.reason, letter.definition_id, key, readable_bytes(letter.payload))


def readable_bytes(raw: bytes | None) -> str:
    """Bytes as text for a person: UTF-8 (invalid bytes replaced), JSON indented, cut at 64 KiB."""
    if raw is None:
        return "(no payload)"
    text = bytes(raw).decode("utf-8", "replace")
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    if len(text) > MAX_PAYLOAD_CHARS:
        return text[:MAX_PAYLOAD_CHARS] + f"\n... ({len(text) - MAX_PAYLOAD_CHARS} more characters)"
    return text


def pretty(value: Any) -> str:
    """A value as indented JSON text (the template escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _json(value)


__all__ = [
    "CONTROLS_BY_STATUS",
    "DeadLetterView",
    "DefinitionView",
    "InstanceRow",
    "dead_letter_view",
    "definition_view",
    "instance_row",
    "pretty",
    "readable_bytes",
    "trigger_rows",
]
