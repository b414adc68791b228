"""The activity feed of `process-engine dev`: one line per thing worth seeing, as steps commit.

Instances starting, actions done (an MQTT publish names its topic), timers firing,
waits timing out, instances ending. Variable refreshes are left out: the simulator
sends several a second.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any, TextIO

from process_engine.engine.commands import RecordHistory
from process_engine.ports import Step

MAX_PENDING = 10_000


def describe_action(action: str, config: Any) -> str:
    """`mqtt_publish home/heatpump/control`: the action and where it goes."""
    config = config if isinstance(config, dict) else {}
    target = {
        "mqtt_publish": config.get("topic"),
        "kafka_publish": config.get("topic"),
        "notify": f"channel {config.get('channel')}",
        "http": f"{config.get('method', 'GET')} {config.get('url')}",
        "log": repr(config.get("message")),
    }.get(action)
    return f"{action} {target}" if target else action


def short_variables(variables: dict[str, Any] | None, first: Collection[str] = (), limit: int = 4) -> str:
    """`device_id=hp-2 temperature=27.9`: a few scalar variables, those named in `first` first."""
    scalars = [(k, v) for k, v in (variables or {}).items() if isinstance(v, (str, int, float, bool))]
    scalars.sort(key=lambda item: item[0] not in first)
    return " ".join(f"{k}={v}" for k, v in scalars[:limit])


class ActivityFeed:
    """A step listener that prints one line per interesting history record."""

    def __init__(self, out: TextIO | None = None, sourced: Callable[[str], Collection[str]] | None = None):
        self.out = out or sys.stdout
        # Variables read from the message say more about an instance than static ones.
        self.sourced = sourced or (lambda definition_id: ())
        self.lock = threading.Lock()
        self.pending: dict[tuple[str, str], str] = {}  # (instance, activity) -> requested action

    def __call__(self, steps: Iterable[Step]) -> None:
        lines = [line for step in steps for line in self.lines(step)]
        if lines:
            with self.lock:
                self.out.write("".join(f"{line}\n" for line in lines))
                self.out.flush()

    def lines(self, step: Step) -> list[str]:
        """The feed lines of one committed step."""
        instance = step.instance
        records = [c for c in step.commands if isinstance(c, RecordHistory)]
        texts = [self._text(instance.id, instance.definition_id, record) for record in records]
        prefix = f"{instance.definition_id[:24]:24} {instance.id}"  # whole: UUIDv7 prefixes repeat
        return [f"{_clock(r.at)}  {prefix}  {t}" for r, t in zip(records, texts, strict=True) if t]

    def _text(self, instance_id: str, definition_id: str, record: RecordHistory) -> str | None:
        data = record.data or {}
        activity = record.activity_id or ""
        match record.event_type:
            case "started":
                return f"started            {short_variables(data.get('variables'), self.sourced(definition_id))}"
            case "action_requested":
                self._remember(instance_id, activity, describe_action(data.get("action", ""), data.get("config")))
                return None
            case "completed" if "timer" in data:
                return f"timer fired        {activity}"
            case "completed" if "attempt" in data:
                action = self.pending.pop((instance_id, activity), "action")
                return f"done               {activity}: {action}"
            case "action_failed":
                return f"action failed      {activity} (attempt {data.get('attempt')}): {record.message}"
            case "timeout":
                return f"wait timed out     {activity}"
            case "process_completed":
                return "completed"
            case "failed":
                return f"FAILED             {record.message}"
            case "cancelled":
                return f"cancelled          {record.message or ''}"
        return None

    def _remember(self, instance_id: str, activity: str, description: str) -> None:
        if len(self.pending) > MAX_PENDING:  # actions whose outcome never came: forget them
            self.pending.clear()
        self.pending[(instance_id, activity)] = description


def _clock(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S")
