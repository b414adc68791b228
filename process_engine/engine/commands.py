"""What the walker asks its host to do. The walker never performs these itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordHistory:
    """Append one row to `process_history`."""

    activity_id: str | None
    event_type: str
    at: datetime
    data: dict[str, Any] | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """Create a durable timer. `kind` is `timer`, `wait_timeout` or `retry`."""

    timer_id: str
    token_id: str
    activity_id: str
    due_at: datetime
    kind: str


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Drop a timer that is no longer needed."""

    timer_id: str


@dataclass(frozen=True, slots=True)
class RunAction:
    """Run a service action (through the outbox). The key makes delivery idempotent."""

    idempotency_key: str
    token_id: str
    activity_id: str
    action: str
    config: Any
    attempt: int


@dataclass(frozen=True, slots=True)
class InstanceCompleted:
    """The instance reached an end."""

    at: datetime


@dataclass(frozen=True, slots=True)
class InstanceFailed:
    """The instance failed; `reason` says why."""

    at: datetime
    reason: str


Command = RecordHistory | ScheduleTimer | CancelTimer | RunAction | InstanceCompleted | InstanceFailed
