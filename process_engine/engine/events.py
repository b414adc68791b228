"""What can happen to an instance. The host turns messages, timers and action outcomes into these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Start:
    """Start a new instance. `variables` are already extracted; `trigger` is the raw message."""

    instance_id: str
    variables: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] | None = None
    correlation_key: str | None = None
    missing: tuple[str, ...] = ()  # variables whose source matched nothing
    trace: str | None = None  # the W3C traceparent the instance's spans belong to


@dataclass(frozen=True, slots=True)
class VariablesRefreshed:
    """A later message with the same correlation key carried new source values."""

    values: dict[str, Any]
    missing: tuple[str, ...] = ()
    # HISTORY_REFRESH_INTERVAL in seconds: a variable's change is recorded in history once
    # per interval of the instance's life (the first one); 0 records every change.
    record_every: float = 0.0


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A durable timer came due."""

    timer_id: str


@dataclass(frozen=True, slots=True)
class ActionSucceeded:
    """A service action finished; `result` may be stored as a variable."""

    token_id: str
    attempt: int
    result: Any = None


@dataclass(frozen=True, slots=True)
class ActionFailed:
    """A service action attempt failed."""

    token_id: str
    attempt: int
    error: str
    retriable: bool = True


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the instance for good."""

    reason: str = "cancelled"


@dataclass(frozen=True, slots=True)
class Fail:
    """Fail the instance from outside: its host could not apply an event to it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Suspend:
    """Pause the instance: timers and actions that come due are held until resumed."""

    reason: str = "suspended"


@dataclass(frozen=True, slots=True)
class Resume:
    """Carry on with a suspended instance."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Run a failed instance again from the activity it failed on."""


Event = (
    Start
    | VariablesRefreshed
    | TimerFired
    | ActionSucceeded
    | ActionFailed
    | Cancel
    | Suspend
    | Resume
    | Retry
)
