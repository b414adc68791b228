"""Dry runs over recorded telemetry: which instances would have started, and what they would have done.

Input is JSON lines, one recorded message a line, as exported from a topic
(`rpk topic consume TOPIC -o start -n N > FILE` writes this shape):

    {"topic": "heatpump-telemetry", "key": "hp-1", "value": {...} or "raw text",
     "partition": 0, "offset": 42, "timestamp": 1767225600000 or "2026-01-01T00:00:00Z"}

`value` as text is what the broker held (rpk writes JSON values this way); kcat's
`payload` and `ts` are accepted for `value` and `timestamp`. `partition` defaults to
0 and `offset` to the line number. Messages go through the live pipeline's code in
file order; the clock follows the recorded timestamps (never backwards) and timers
that come due between messages fire. Actions are not executed: each is taken to
have succeeded at once. Messages on topics no definition listens to are skipped,
as the consumer never subscribes to them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from process_engine.domain.definition import ProcessDefinition
from process_engine.flowtest.simulator import Outcome, Simulator


@dataclass(frozen=True)
class RecordedMessage:
    """One message as it was recorded from a topic."""

    topic: str
    value: bytes | None
    timestamp: datetime
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


@dataclass(frozen=True)
class BadLine:
    """A line of the recording that could not be read; it is skipped."""

    line: int
    reason: str


@dataclass(frozen=True)
class ReplayedAction:
    """An action an instance would have sent, with its rendered config."""

    activity: str
    name: str
    config: Any


@dataclass(frozen=True)
class ReplayedInstance:
    """An instance that would have started, and how far it got."""

    definition_id: str
    instance_id: str
    correlation_key: str | None
    path: tuple[str, ...]
    actions: tuple[ReplayedAction, ...]
    status: str
    current_activity: str | None
    started_at: datetime | None


@dataclass
class ReplayReport:
    """What the recorded messages would have done."""

    instances: list[ReplayedInstance] = field(default_factory=list)
    messages: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    ignored: int = 0  # on topics no definition listens to

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (timestamps as ISO-8601)."""
        document = asdict(self)
        for instance in document["instances"]:
            started = instance["started_at"]
            instance["started_at"] = started.isoformat() if started else None
        return document


# -- reading a recording --------------------------------------------------------
def parse_line(text: str, number: int) -> RecordedMessage:
    """One JSON line of a recording.

    Raises:
        ValueError: the line is not a recorded message; the text says why.
    """
    try:
        record = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object with topic, value and timestamp")
    topic = record.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ValueError("'topic' is missing or not text")
    value = record.get("value", record.get("payload"))
    timestamp = parse_timestamp(record.get("timestamp", record.get("ts")))
    partition = _whole(record.get("partition", 0), "partition")
    offset = _whole(record.get("offset", number), "offset")
    key = record.get("key")
    if key is not None and not isinstance(key, str):
        raise ValueError("'key' must be text or null")
    return RecordedMessage(topic, _encode(value), timestamp, partition, offset, key.encode() if key else None)


def parse_timestamp(value: Any) -> datetime:
    """Milliseconds since the epoch, or ISO-8601 text (no zone means UTC)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    if isinstance(value, str) and value.strip().isdigit():
        return parse_timestamp(int(value))
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"'timestamp' {value!r} is neither epoch milliseconds nor ISO-8601") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise ValueError("'timestamp' is missing (epoch milliseconds or ISO-8601)")


def _whole(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"'{name}' must be a whole number, 0 or more")
    return value


def _encode(value: Any) -> bytes | None:
    """The value as the broker held it: text as is, anything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8")


def read_recording(path: Path) -> tuple[list[RecordedMessage], list[BadLine]]:
    """Every readable message of a JSON-lines file, and the lines that were not.

    Raises:
        OSError: the file cannot be read.
    """
    messages: list[RecordedMessage] = []
    bad: list[BadLine] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                messages.append(parse_line(text, number))
            except ValueError as error:
                bad.append(BadLine(number, str(error)))
    return messages, bad


# -- replaying -----------------------------------------------------------------------
def replay(messages: Iterable[RecordedMessage], definitions: list[ProcessDefinition]) -> ReplayReport:
    """Run definitions over recorded messages with actions simulated as succeeded.

    Raises:
        SimulationError: a definition loops without end (more timers or actions than a run allows).
    """
    stream = iter(messages)
    first = next(stream, None)
    if first is None:
        return ReplayReport()
    simulator = Simulator(definitions, first.timestamp)
    topics = simulator.registry.topics()
    report = ReplayReport()
    for message in itertools.chain([first], stream):
        report.messages += 1
        if message.topic not in topics:
            report.ignored += 1
            continue
        # timestamps of different partitions interleave; simulated time only moves forward
        at = max(simulator.now, message.timestamp)
        result = simulator.deliver(message.topic, message.value, at, message.partition, message.offset, message.key)
        report.duplicates += result.duplicates
    report.dead_lettered = simulator.dead_letters
    report.instances = _instances(simulator.outcome())
    return report


def _instances(outcome: Outcome) -> list[ReplayedInstance]:
    return [
        ReplayedInstance(
            definition_id=instance.definition_id,
            instance_id=instance.id,
            correlation_key=instance.correlation_key,
            path=instance.path,
            actions=tuple(ReplayedAction(a.activity, a.action, a.config) for a in outcome.actions if a.instance_id == instance.id),
            status=instance.status,
            current_activity=instance.current_activity,
            started_at=instance.started_at,
        )
        for instance in outcome.instances
    ]


# -- telling the user ------------------------------------------------------------------
def report_lines(report: ReplayReport) -> list[str]:
    """The report as text: each instance with its path and actions, then a summary line."""
    lines: list[str] = []
    for instance in report.instances:
        key = f"  key={instance.correlation_key}" if instance.correlation_key is not None else ""
        where = f" at {instance.current_activity}" if instance.current_activity else ""
        started = instance.started_at.isoformat() if instance.started_at else "?"
        lines.append(f"{instance.definition_id}  {instance.instance_id}{key}  {instance.status}{where}  (started {started})")
        lines.append(f"    path:   {' > '.join(instance.path) or '(none yet)'}")
        for action in instance.actions:
            lines.append(f"    action: {action.activity}: {action.name} {json.dumps(action.config, ensure_ascii=False, default=str)}")
    lines.append(summary_line(report))
    return lines


def summary_line(report: ReplayReport) -> str:
    """`3 instance(s) would have started (2 completed, 1 running) from 412 message(s); ...`."""
    statuses: dict[str, int] = {}
    for instance in report.instances:
        statuses[instance.status] = statuses.get(instance.status, 0) + 1
    by_status = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    actions = sum(len(i.actions) for i in report.instances)
    text = f"{len(report.instances)} instance(s) would have started"
    text += f" ({by_status})" if by_status else ""
    text += f" from {report.messages} message(s); {actions} action(s) would have been sent"
    extras = [(report.dead_lettered, "dead-lettered"), (report.duplicates, "duplicate(s)"), (report.ignored, "on topics no definition listens to")]
    return text + "".join(f"; {count} {what}" for count, what in extras if count)
