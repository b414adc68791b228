"""Instance state: plain data that serialises to JSON, versioned by `state_version`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, NamedTuple

STATE_VERSION = 1

ACTIVE_STATUSES = ("running", "suspended")
FINAL_STATUSES = ("completed", "failed", "cancelled")
STATUSES = ACTIVE_STATUSES + FINAL_STATUSES

# What a token waits for while it sits on an activity.
WAIT_TIMER = "timer"  # a timer activity, or a retry backoff
WAIT_ACTION = "action"  # a service action's outcome
WAIT_CONDITION = "condition"  # a wait activity's condition
WAIT_JOIN = "join"  # the other branches at a join
WAIT_COMPENSATION = "compensation"  # a compensation action's outcome
WAIT_COMPENSATED = "compensated"  # a `compensate` activity: every pending compensation to finish
_tuple = tuple.__new__


class Token(NamedTuple):
    """A point of execution. Parallel branches each have one.

    `forks` is the stack of fork scopes the token is in, as `[scope_id, branch_count]`,
    so a join knows how many branches to wait for. A named tuple: the walker makes a
    new token on every activity, and a frozen dataclass costs three times as much.
    """

    id: str
    activity_id: str
    waiting: str | None = None
    timer_id: str | None = None
    attempt: int = 0
    visit: int = 0
    forks: tuple[tuple[str, int], ...] = ()

    def moved_to(self, activity_id: str) -> Token:
        """This token on another activity, ready to run: no wait, timer or attempt.

        Built directly (tuple.__new__: a NamedTuple's own __new__ is a Python function): the
        walker moves a token on every activity, and `_replace` costs four times as much.
        """
        return _tuple(Token, (self.id, activity_id, None, None, 0, self.visit, self.forks))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "id": self.id,
            "activity_id": self.activity_id,
            "waiting": self.waiting,
            "timer_id": self.timer_id,
            "attempt": self.attempt,
            "visit": self.visit,
            "forks": [list(scope) for scope in self.forks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Token:
        """Inverse of `to_json`."""
        forks = tuple((str(scope), int(count)) for scope, count in data.get("forks", ()))
        return cls(
            id=data["id"],
            activity_id=data["activity_id"],
            waiting=data.get("waiting"),
            timer_id=data.get("timer_id"),
            attempt=int(data.get("attempt", 0)),
            visit=int(data.get("visit", 0)),
            forks=forks,
        )


@dataclass(frozen=True, slots=True)
class InstanceState:
    """Everything the walker knows about one running or finished instance."""

    id: str
    definition_id: str
    definition_version: int
    status: str = "running"
    variables: dict[str, Any] = field(default_factory=dict)
    tokens: tuple[Token, ...] = ()
    correlation_key: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    next_token: int = 1
    visits: dict[str, int] = field(default_factory=dict)
    parked: tuple[dict[str, Any], ...] = ()  # events that arrived while suspended
    # Completed service activities that can be undone, in completion order:
    # {"activity", "visit", "action", "config", "result", "status": pending|done|failed}.
    compensations: tuple[dict[str, Any], ...] = ()
    # While compensations run: {"end": "cancelled"|"failed"|None, "reason", "token"}; None otherwise.
    compensating: dict[str, Any] | None = None
    # Per variable, the HISTORY_REFRESH_INTERVAL window of its last recorded change.
    recorded: dict[str, int] = field(default_factory=dict)
    version: int = 0  # optimistic-concurrency version, owned by the store
    state_version: int = STATE_VERSION
    # The W3C traceparent the instance's spans belong to (its trigger message's, or a
    # fresh trace's): kept so a timer or an action outcome hours later joins that trace.
    trace: str | None = None

    @property
    def current_activity(self) -> str | None:
        """The activity of the first token: what the seed's `current_activity` column shows."""
        return self.tokens[0].activity_id if self.tokens else None

    @property
    def active(self) -> bool:
        """True while the instance may still do something."""
        return self.status in ACTIVE_STATUSES

    def token(self, token_id: str) -> Token | None:
        """The token with this id, if it is still alive."""
        for token in self.tokens:
            if token.id == token_id:
                return token
        return None

    def with_changes(self, **changes: Any) -> InstanceState:
        """A copy with fields replaced."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The `state` document stored beside the seed's columns."""
        return {
            "state_version": self.state_version,
            "tokens": [token.to_json() for token in self.tokens],
            "next_token": self.next_token,
            "visits": dict(self.visits),
            "error": self.error,
            "parked": list(self.parked),
            **({"compensations": list(self.compensations)} if self.compensations else {}),
            **({"compensating": self.compensating} if self.compensating is not None else {}),
            **({"recorded": dict(self.recorded)} if self.recorded else {}),
            **({"trace": self.trace} if self.trace is not None else {}),
        }

    @classmethod
    def from_row(
        cls,
        *,
        id: str,
        definition_id: str,
        definition_version: int,
        status: str,
        variables: dict[str, Any],
        state: dict[str, Any],
        correlation_key: str | None = None,
        started_at: datetime | None = None,
        completed_at: datetime | None = None,
        version: int = 0,
    ) -> InstanceState:
        """Rebuild an instance from stored columns, upgrading old `state` documents."""
        state = upgrade_state(state)
        return cls(
            id=str(id),
            definition_id=definition_id,
            definition_version=int(definition_version),
            status=status,
            variables=dict(variables),
            tokens=tuple(Token.from_json(t) for t in state.get("tokens", ())),
            correlation_key=correlation_key,
            started_at=started_at,
            completed_at=completed_at,
            error=state.get("error"),
            next_token=int(state.get("next_token", 1)),
            visits=dict(state.get("visits", {})),
            parked=tuple(state.get("parked", ())),
            compensations=tuple(state.get("compensations", ())),
            compensating=state.get("compensating"),
            recorded=dict(state.get("recorded", {})),
            version=int(version),
            trace=state.get("trace"),
        )


# The slots' own setters: what a frozen dataclass's __init__ reaches through
# object.__setattr__, one slow call per field.
_SETTERS = tuple(getattr(InstanceState, f.name).__set__ for f in fields(InstanceState))


def state_of(*values: Any) -> InstanceState:
    """An InstanceState from every field, positionally in declaration order.

    For the walker, which builds two per step: the dataclass __init__ costs three
    times as much for fifteen fields. Nothing is defaulted or checked but the count.
    """
    if len(values) != len(_SETTERS):
        raise TypeError(f"state_of() takes {len(_SETTERS)} values, got {len(values)}")
    state = object.__new__(InstanceState)
    for set_field, value in zip(_SETTERS, values):
        set_field(state, value)
    return state


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored state document up to STATE_VERSION."""
    version = int(state.get("state_version", 1))
    if version > STATE_VERSION:
        raise ValueError(
            f"instance state_version {version} is newer than this engine understands "
            f"({STATE_VERSION}); upgrade process-engine"
        )
    return state
