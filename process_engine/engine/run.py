"""The working state of one `advance` call: a mutable scratchpad, frozen again at the end."""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from process_engine.domain.definition import Activity, ProcessDefinition
from process_engine.domain.expression_limits import CpuBudget
from process_engine.domain.instance import WAIT_COMPENSATION, InstanceState, Token, state_of
from process_engine.engine.commands import (
    CancelTimer,
    Command,
    InstanceCompleted,
    InstanceFailed,
    RecordHistory,
)

# A loop of activities with no timer, wait or action in it would never give control back.
MAX_ACTIVITIES_PER_STEP = 1000
_tuple = tuple.__new__


class Run:
    """Mutable copy of an instance plus the commands produced so far."""

    def __init__(self, definition: ProcessDefinition, instance: InstanceState, now: datetime):
        self.definition = definition
        self.instance = instance
        self.now = now
        self.status = instance.status
        self.variables = dict(instance.variables)
        self.tokens: dict[str, Token] = {token.id: token for token in instance.tokens}
        self.visits = dict(instance.visits)
        self.next_token = instance.next_token
        self.error = instance.error
        self.completed_at = instance.completed_at
        self.parked = list(instance.parked)
        self.compensations = list(instance.compensations)
        self.compensating = instance.compensating
        self.recorded = dict(instance.recorded)
        self.commands: list[Command] = []
        self.ready: deque[str] = deque()
        self.executed = 0
        self.budget = CpuBudget().start()  # the step's CPU guard, the one clock the walker reads

    # -- history and commands -------------------------------------------------
    def record(self, activity_id: str | None, event_type: str, message: str | None = None, **data: Any) -> None:
        """Append a history row."""
        # tuple.__new__: a NamedTuple's own __new__ is a Python function, and a step records about eight rows.
        self.commands.append(_tuple(RecordHistory, (activity_id, event_type, self.now, data or None, message)))

    def emit(self, command: Command) -> None:
        """Ask the host to do something."""
        self.commands.append(command)

    # -- tokens ---------------------------------------------------------------
    def new_token(self, activity_id: str, forks: tuple[tuple[str, int], ...] = ()) -> Token:
        """Create a token on `activity_id`, ready to run."""
        token = Token(id=f"t{self.next_token}", activity_id=activity_id, forks=forks)
        self.next_token += 1
        self.tokens[token.id] = token
        self.ready.append(token.id)
        return token

    def move(self, token: Token, activity_id: str) -> None:
        """Send a token on to another activity and queue it to run."""
        self.tokens[token.id] = token.moved_to(activity_id)
        self.ready.append(token.id)

    def update(self, token: Token, **changes: Any) -> Token:
        """Replace a token's fields."""
        changed = token._replace(**changes)
        self.tokens[token.id] = changed
        return changed

    def remove(self, token: Token) -> None:
        """Retire a token (it reached an end or merged at a join)."""
        self.tokens.pop(token.id, None)

    def enter(self, activity_id: str) -> int:
        """Count a visit to an activity; returns the visit number."""
        visit = self.visits.get(activity_id, 0) + 1
        self.visits[activity_id] = visit
        return visit

    def drop_timers(self) -> None:
        """Cancel every timer a token still waits on."""
        for token in list(self.tokens.values()):
            if token.timer_id:
                self.emit(CancelTimer(token.timer_id))
                self.update(token, timer_id=None)

    # -- endings --------------------------------------------------------------
    def complete(self) -> None:
        """Every token reached an end."""
        self.status = "completed"
        self.completed_at = self.now
        self.record(None, "process_completed", "instance completed")
        self.emit(InstanceCompleted(self.now))

    def fail(self, activity_id: str | None, reason: str) -> None:
        """Stop the instance as failed, with the reason in its history.

        With completed activities to undo, their compensations run first (the walker
        sees `compensating` and requests them); the instance fails after the last.
        """
        if self.status != "running" or (self.compensating is not None and self.compensating["end"] is not None):
            return
        if self.compensating is not None or self.pending_compensations():
            self.end_after_compensation("failed", reason, activity_id)
            return
        self.finish_failed(activity_id, reason)

    def pending_compensations(self) -> list[dict[str, Any]]:
        """The completed activities not undone yet, last completed first."""
        return [entry for entry in reversed(self.compensations) if entry["status"] == "pending"]

    def end_after_compensation(self, end: str, reason: str, activity_id: str | None = None) -> None:
        """Stop the work, undo what was done, then end as `end` (cancelled or failed)."""
        self.drop_timers()
        for token in list(self.tokens.values()):
            if token.waiting != WAIT_COMPENSATION:  # the compensation in flight goes on
                self.remove(token)
        self.ready.clear()
        self.status = "running"
        self.parked.clear()
        self.compensating = {"end": end, "reason": reason, "activity": activity_id, "token": None}

    def finish_failed(self, activity_id: str | None, reason: str) -> None:
        """The failure itself: timers dropped, status, history, the command."""
        self.drop_timers()
        self.status = "failed"
        self.error = reason
        self.completed_at = self.now
        self.ready.clear()
        self.record(activity_id, "failed", reason)
        self.emit(InstanceFailed(self.now, reason))

    def freeze(self) -> InstanceState:
        """The new, immutable instance state."""
        instance = self.instance
        return state_of(
            instance.id, instance.definition_id, instance.definition_version, self.status, self.variables,
            tuple(self.tokens.values()), instance.correlation_key, instance.started_at, self.completed_at,
            self.error, self.next_token, self.visits, tuple(self.parked), tuple(self.compensations), self.compensating, self.recorded,
            instance.version, instance.state_version, instance.trace,
        )


def continue_after(run: Run, activity: Activity, token: Token, **data: Any) -> None:
    """Record the activity as completed and move the token to `next`."""
    run.record(activity.id, "completed", None, **data)
    if activity.next is None:
        run.fail(activity.id, f"activity '{activity.id}' has nowhere to go")
        return
    run.move(token, activity.next)
