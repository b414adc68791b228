"""Parsed process definitions: immutable, compiled once and shared by every instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from process_engine.domain.expressions import Expression
from process_engine.domain.jsonpaths import JsonPath
from process_engine.domain.templates import Template
from process_engine.domain.windows import Window

TRIGGER_TYPES = ("redpanda", "kafka", "schedule", "api")
INSTANCE_MODES = ("single", "restart", "queued", "parallel")


@dataclass(frozen=True, slots=True)
class Trigger:
    """How instances start: a topic message, a cron tick or an API call."""

    type: str
    topic: str | None = None
    condition: Expression | None = None
    correlate: JsonPath | None = None
    mode: str = "single"
    cron: str | None = None
    # Telemetry holds (PRODUCT.md): `for` is a keyword, hence `hold_for`.
    hold_for: timedelta | None = None
    count: int | None = None
    within: timedelta | None = None
    cooldown: timedelta | None = None
    # A hash of the trigger's YAML: a pending hold kept under another hash is dropped.
    config_hash: str = ""

    @property
    def is_topic(self) -> bool:
        """True when messages on `topic` start instances."""
        return self.type in ("redpanda", "kafka")

    @property
    def holds(self) -> bool:
        """True when starts go through the per-key rules `for`, `count` or `cooldown`."""
        return self.hold_for is not None or self.count is not None or self.cooldown is not None


@dataclass(frozen=True, slots=True)
class Variable:
    """A process variable, taken from the trigger message (`source`) or fixed (`value`)."""

    name: str
    source: JsonPath | None = None
    value: Any = None
    line: int | None = None
    window: Window | None = None  # aggregate the source over the key's recent messages


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing service action is tried, and how long to wait between tries."""

    max_attempts: int = 1
    backoff: timedelta = timedelta(seconds=1)
    multiplier: float = 2.0
    max_backoff: timedelta = timedelta(minutes=5)
    jitter: float = 0.1

    def delay(self, attempt: int) -> timedelta:
        """The wait after failed attempt number `attempt` (1-based), before jitter."""
        seconds = self.backoff.total_seconds() * self.multiplier ** (attempt - 1)
        return timedelta(seconds=min(seconds, self.max_backoff.total_seconds()))


@dataclass(frozen=True, slots=True)
class Compensation:
    """How a completed service activity is undone: an action with its config, or a plug-in handler."""

    action: str | None = None
    config: Template | None = None
    handler_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    handler: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Activity:
    """One node of the activity graph. `next` is already resolved (implicit next applied)."""

    id: str
    type: str
    next: str | None = None
    line: int | None = None
    # decision / wait
    condition: Expression | None = None
    true_path: str | None = None
    false_path: str | None = None
    # service
    action: str | None = None
    config: Template | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_error: str | None = None
    compensate: Compensation | None = None
    # timer
    duration: timedelta | None = None
    until: Expression | None = None
    # wait
    timeout: timedelta | None = None
    timeout_path: str | None = None
    # set: variable name -> expression (or a plain value wrapped as Template)
    assignments: tuple[tuple[str, Expression | Template], ...] = ()
    # parallel
    branches: tuple[str, ...] = ()
    # custom activity types keep their raw options and the plug-in that runs them
    options: dict[str, Any] = field(default_factory=dict)
    handler: Any = field(default=None, compare=False, repr=False)

    def targets(self) -> tuple[str, ...]:
        """Every activity id this one can continue with."""
        found = [self.next, self.true_path, self.false_path, self.on_error, self.timeout_path]
        return tuple(t for t in [*found, *self.branches] if t)


@dataclass(frozen=True, slots=True)
class ProcessDefinition:
    """A whole process: trigger, variables and the activity graph, keyed by id."""

    id: str
    name: str
    version: int
    trigger: Trigger
    variables: tuple[Variable, ...]
    activities: dict[str, Activity]
    start_activity: str
    content_hash: str = ""
    source_file: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    windowed: bool = False  # a variable has a `window`: messages go through the window state
    # The variables the trigger condition reads: all a message needs to be screened.
    condition_variables: tuple[Variable, ...] = field(init=False, default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        condition = self.trigger.condition
        read = condition.bare_names if condition is not None else frozenset()
        object.__setattr__(self, "condition_variables", tuple(v for v in self.variables if v.name in read))

    def activity(self, activity_id: str) -> Activity:
        """The activity with this id; KeyError names it when missing."""
        return self.activities[activity_id]

    @property
    def correlated(self) -> bool:
        """True when instances are keyed by a correlation value."""
        return self.trigger.correlate is not None
