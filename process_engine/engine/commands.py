"""What the walker asks its host to do. The walker never performs these itself.

Named tuples: a step makes several of each, and a frozen dataclass costs three
times as much to build.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class RecordHistory(NamedTuple):
    """Append one row to `process_history`."""

    activity_id: str | None
    event_type: str
    at: datetime
    data: dict[str, Any] | None = None
    message: str | None = None


class ScheduleTimer(NamedTuple):
    """Create a durable timer. `kind` is `timer`, `wait_timeout` or `retry`."""

    timer_id: str
    token_id: str
    activity_id: str
    due_at: datetime
    kind: str


class CancelTimer(NamedTuple):
    """Drop a timer that is no longer needed."""

    timer_id: str


class RunAction(NamedTuple):
    """Run a service action (through the outbox). The key makes delivery idempotent."""

    idempotency_key: str
    token_id: str
    activity_id: str
    action: str
    config: Any
    attempt: int


class InstanceCompleted(NamedTuple):
    """The instance reached an end."""

    at: datetime


class InstanceFailed(NamedTuple):
    """The instance failed; `reason` says why."""

    at: datetime
    reason: str


Command = RecordHistory | ScheduleTimer | CancelTimer | RunAction | InstanceCompleted | InstanceFailed
