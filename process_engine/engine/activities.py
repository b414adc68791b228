"""What each activity type does when a token reaches it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from process_engine.domain.definition import Activity
from process_engine.domain.errors import ExpressionError
from process_engine.domain.expression_limits import check_variables
from process_engine.domain.expressions import Expression
from process_engine.domain.instance import WAIT_ACTION, WAIT_CONDITION, WAIT_JOIN, WAIT_TIMER, Token
from process_engine.engine import compensation
from process_engine.engine.commands import CancelTimer, RunAction, ScheduleTimer
from process_engine.engine.run import Run, continue_after


def execute(run: Run, token: Token) -> None:
    """Run the activity the token sits on; the token moves on, waits or retires."""
    activity = run.definition.activities.get(token.activity_id)
    if activity is None:
        run.fail(token.activity_id, f"unknown activity '{token.activity_id}' (definition changed?)")
        return
    handler = HANDLERS.get(activity.type, _custom)
    try:
        handler(run, activity, token)
    except ExpressionError as error:
        run.update(token, waiting="failed")
        run.fail(activity.id, f"{activity.type} '{activity.id}': {error}")


def _start(run: Run, activity: Activity, token: Token) -> None:
    continue_after(run, activity, token)


def _end(run: Run, activity: Activity, token: Token) -> None:
    run.record(activity.id, "completed")
    run.remove(token)
    if not run.tokens:
        run.complete()


def _decision(run: Run, activity: Activity, token: Token) -> None:
    result = truth(activity.condition, run)
    path = activity.true_path if result else activity.false_path
    read = values_read(activity.condition, run.variables)
    run.record(activity.id, "completed", f"{result} -> {path}", result=result, path=path, read=read)
    run.move(token, path)


def _service(run: Run, activity: Activity, token: Token) -> None:
    visit = run.enter(activity.id)
    token = run.update(token, visit=visit)
    request_action(run, activity, token, attempt=1)


def request_action(run: Run, activity: Activity, token: Token, attempt: int) -> None:
    """Ask the host to run the activity's action (attempt N) and wait for its outcome."""
    config = activity.config.render(run.variables) if activity.config is not None else {}
    key = idempotency_key(run.instance.id, activity.id, token.visit, attempt)
    run.update(token, waiting=WAIT_ACTION, attempt=attempt, timer_id=None)
    run.record(activity.id, "action_requested", None, action=activity.action, attempt=attempt, config=config, key=key)
    run.emit(RunAction(key, token.id, activity.id, activity.action or "", config, attempt))


def idempotency_key(instance_id: str, activity_id: str, visit: int, attempt: int) -> str:
    """(instance, activity, attempt); a repeated visit of the same activity is told apart."""
    place = activity_id if visit <= 1 else f"{activity_id}#{visit}"
    return f"{instance_id}:{place}:{attempt}"


def timer_id(run: Run, token: Token, activity: Activity, suffix: str) -> str:
    """A timer id unique within the instance and stable for the same step."""
    return f"{run.instance.id}:{token.id}:{activity.id}:{run.visits.get(activity.id, 0)}:{suffix}"


def schedule(run: Run, token: Token, activity: Activity, due_at: datetime, kind: str, suffix: str) -> None:
    """Create a durable timer for the token."""
    identifier = timer_id(run, token, activity, suffix)
    run.update(token, timer_id=identifier)
    run.emit(ScheduleTimer(identifier, token.id, activity.id, due_at, kind))


def _timer(run: Run, activity: Activity, token: Token) -> None:
    run.enter(activity.id)
    if activity.duration is not None:
        due_at = run.now + activity.duration
    else:
        due_at = to_datetime(activity.until.evaluate(run.variables, budget=run.budget) if activity.until else None)
    token = run.update(token, waiting=WAIT_TIMER)
    schedule(run, token, activity, due_at, "timer", "timer")
    run.record(activity.id, "timer_scheduled", None, due_at=due_at.isoformat())


def _wait(run: Run, activity: Activity, token: Token) -> None:
    run.enter(activity.id)
    if truth(activity.condition, run):
        continue_after(run, activity, token, condition=True, read=values_read(activity.condition, run.variables))
        return
    token = run.update(token, waiting=WAIT_CONDITION)
    data: dict[str, Any] = {"read": values_read(activity.condition, run.variables)}
    if activity.timeout is not None:
        due_at = run.now + activity.timeout
        schedule(run, token, activity, due_at, "wait_timeout", "timeout")
        data["timeout_at"] = due_at.isoformat()
    run.record(activity.id, "waiting", None, **data)


def recheck_wait(run: Run, token: Token) -> None:
    """A waiting token's condition may hold now that variables changed."""
    activity = run.definition.activities.get(token.activity_id)
    if activity is None or not truth(activity.condition, run):
        return
    if token.timer_id:
        run.emit(CancelTimer(token.timer_id))
    read = values_read(activity.condition, run.variables)
    continue_after(run, activity, run.update(token, timer_id=None), condition=True, read=read)


def _set(run: Run, activity: Activity, token: Token) -> None:
    """Assign in order, each seeing the ones before; nothing is kept when the result is too big."""
    variables = dict(run.variables)
    assigned = {}
    for name, value in activity.assignments:
        if isinstance(value, Expression):
            result = value.evaluate(variables, budget=run.budget)
        else:
            result = value.render(variables)
        variables[name] = result
        assigned[name] = result
    check_variables(variables, assigned)
    run.variables = variables
    continue_after(run, activity, token, assigned=assigned)


def _parallel(run: Run, activity: Activity, token: Token) -> None:
    visit = run.enter(activity.id)
    scope = f"{activity.id}:{token.id}:{visit}"
    run.remove(token)
    forks = token.forks + ((scope, len(activity.branches)),)
    created = [run.new_token(branch, forks).id for branch in activity.branches]
    run.record(activity.id, "completed", None, branches=list(activity.branches), tokens=created)


def _join(run: Run, activity: Activity, token: Token) -> None:
    if not token.forks:
        continue_after(run, activity, token)
        return
    scope, count = token.forks[-1]
    token = run.update(token, waiting=WAIT_JOIN)
    arrived = [t for t in run.tokens.values() if t.activity_id == activity.id and t.waiting == WAIT_JOIN and t.forks and t.forks[-1][0] == scope]
    if len(arrived) < count:
        run.record(activity.id, "join_waiting", None, arrived=len(arrived), expected=count)
        return
    for merged in arrived:
        run.remove(merged)
    survivor = run.new_token(activity.id, token.forks[:-1])
    run.ready.remove(survivor.id)
    continue_after(run, activity, survivor, merged=len(arrived))


def _custom(run: Run, activity: Activity, token: Token) -> None:
    """A plug-in activity type: `execute(options, variables)` returns variable updates."""
    handler = activity.handler
    if handler is None or not hasattr(handler, "execute"):
        run.fail(activity.id, f"no handler for activity type '{activity.type}'")
        return
    try:
        updates = handler.execute(dict(activity.options), dict(run.variables)) or {}
    except Exception as error:  # a plug-in's bug fails its instance, never the engine
        run.fail(activity.id, f"activity type '{activity.type}' raised {type(error).__name__}: {error}")
        return
    try:
        check_variables({**run.variables, **updates}, updates)
    except ExpressionError as error:
        run.fail(activity.id, f"activity type '{activity.type}': {error}")
        return
    run.variables.update(updates)
    continue_after(run, activity, token, assigned=dict(updates))


def truth(condition: Expression | None, run: Run) -> bool:
    """Evaluate a condition over the run's variables, within its CPU budget (no condition is true)."""
    return True if condition is None else bool(condition.evaluate(run.variables, budget=run.budget))


def values_read(condition: Expression | None, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a condition mentions, with the values it saw: each choice is explained by its own row.

    A variable counts as read when its name stands in the condition as `${name}` or as a
    bare name (not after a dot, so `fields.temperature` reads no variable `temperature`).
    """
    if condition is None:
        return {}
    source = condition.source
    return {name: variables[name] for name in sorted(variables) if name in condition.names or _mentions(source, name)}


def _mentions(source: str, name: str) -> bool:
    return name in source and re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", source) is not None


def to_datetime(value: Any) -> datetime:
    """A timer's `until` result: a datetime, an ISO-8601 string or epoch seconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=value)
        except (OverflowError, ValueError):  # past year 9999, or NaN
            raise ExpressionError(f"'until' gave {value!r}: a time past the years 1 to 9999") from None
    if isinstance(value, str):
        try:
            return to_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise ExpressionError(f"'until' gave {value!r}; expected an ISO-8601 timestamp or epoch seconds")


HANDLERS: dict[str, Callable[[Run, Activity, Token], None]] = {
    "compensate": compensation.begin_activity,
    "start": _start,
    "end": _end,
    "decision": _decision,
    "service": _service,
    "timer": _timer,
    "wait": _wait,
    "set": _set,
    "parallel": _parallel,
    "join": _join,
}
