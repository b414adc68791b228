"""advance(definition, instance, event, now) -> (instance, commands).

Pure and deterministic: no clock, no IO, no randomness. The same inputs always give
the same outputs, so a step can be recomputed after a conflict or a crash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from process_engine.domain.definition import Activity, ProcessDefinition
from process_engine.domain.errors import ExpressionError
from process_engine.domain.expression_limits import check_variables
from process_engine.domain.instance import (
    STATE_VERSION,
    WAIT_ACTION,
    WAIT_COMPENSATION,
    WAIT_CONDITION,
    WAIT_TIMER,
    InstanceState,
    state_of,
)
from process_engine.engine import activities, compensation
from process_engine.engine.commands import Command
from process_engine.engine.events import (
    ActionFailed,
    ActionSucceeded,
    Cancel,
    Event,
    Fail,
    Resume,
    Retry,
    Start,
    Suspend,
    TimerFired,
    VariablesRefreshed,
)
from process_engine.engine.run import MAX_ACTIVITIES_PER_STEP, Run

# Activities between two reads of the CPU clock: each activity's expressions check it
# themselves when they run long, so this only catches long runs of cheap activities.
BUDGET_CHECK_EVERY = 16
PARKED_EVENTS = {"TimerFired": TimerFired, "ActionSucceeded": ActionSucceeded, "ActionFailed": ActionFailed}


def advance(
    definition: ProcessDefinition, instance: InstanceState | None, event: Event, now: datetime
) -> tuple[InstanceState, list[Command]]:
    """Apply one event and walk until every token waits, acts or ends.

    `instance` is None only for a Start event. Events that no longer apply (a timer
    of a token that moved on, a second outcome of the same action attempt) change
    nothing and return no commands.
    """
    if isinstance(event, Start):
        instance = new_instance(definition, event, now)
    elif instance is None:
        raise ValueError(f"{type(event).__name__} needs an existing instance")
    elif isinstance(event, VariablesRefreshed) and _changes_nothing(instance, event):
        return instance, []  # most refreshes: the reading repeats what the instance holds
    run = Run(definition, instance, now)
    if isinstance(event, Start):
        _start(run, event)
    else:
        _apply(run, event)
    _walk(run)
    while compensation.proceed(run):  # a `compensate` activity finished: its token walks on
        _walk(run)
    return run.freeze(), run.commands


def new_instance(definition: ProcessDefinition, event: Start, now: datetime) -> InstanceState:
    """A fresh instance: static variable values first, then what the trigger gave."""
    variables: dict[str, Any] = {v.name: v.value for v in definition.variables if v.source is None}
    variables.update(event.variables)
    return state_of(
        event.instance_id, definition.id, definition.version, "running", variables, (), event.correlation_key,
        now, None, None, 1, {}, (), (), None, {}, 0, STATE_VERSION, event.trace,
    )


def _start(run: Run, event: Start) -> None:
    start = run.definition.start_activity
    run.record(start, "started", f"instance of {run.definition.id} v{run.definition.version} started", variables=dict(run.variables))
    for name in event.missing:
        run.record(None, "variable_missing", f"source of variable '{name}' matched nothing in the trigger message", name=name)
    try:
        check_variables(run.variables)
    except ExpressionError as error:
        run.fail(start, str(error))
        return
    run.new_token(start)


def _apply(run: Run, event: Event) -> None:
    if run.status == "suspended" and type(event).__name__ in PARKED_EVENTS:
        run.parked.append({"type": type(event).__name__, **asdict(event)})
        return
    if isinstance(event, (Cancel, Fail, Suspend, Resume, Retry)):
        _control(run, event)
    elif run.status != "running":
        return  # a late timer or action outcome of a finished instance
    elif isinstance(event, VariablesRefreshed):
        _refresh(run, event)
    elif isinstance(event, TimerFired):
        _timer_fired(run, event)
    elif isinstance(event, ActionSucceeded):
        _action_succeeded(run, event)
    elif isinstance(event, ActionFailed):
        _action_failed(run, event)


def _walk(run: Run) -> None:
    while run.ready and run.status == "running":
        token = run.tokens.get(run.ready.popleft())
        if token is None or token.waiting is not None:
            continue
        run.executed += 1
        if run.executed > MAX_ACTIVITIES_PER_STEP:
            run.fail(token.activity_id, f"more than {MAX_ACTIVITIES_PER_STEP} activities in one step: a loop with no timer, wait or action?")
            return
        if not run.executed % BUDGET_CHECK_EVERY:
            try:
                run.budget.check()
            except ExpressionError as error:
                run.fail(token.activity_id, str(error))
                return
        activities.execute(run, token)


def _changes_nothing(instance: InstanceState, event: VariablesRefreshed) -> bool:
    """Whether a refresh would leave the instance as it is: every value already held, none missing, no condition to recheck.

    `_refresh` then records nothing and moves no token; telling it here spares
    copying the instance into a Run and freezing it again for every repeated reading.
    """
    if event.missing or instance.status != "running" or instance.compensating is not None:
        return False
    if _changed_values(instance.variables, event.values):
        return False
    return not any(token.waiting == WAIT_CONDITION for token in instance.tokens)


def _changed_values(variables: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of a refresh that are new to the variables or differ from them."""
    return {name: value for name, value in values.items() if name not in variables or variables[name] != value}


def _refresh(run: Run, event: VariablesRefreshed) -> None:
    changed = _changed_values(run.variables, event.values)
    if changed:
        try:
            check_variables({**run.variables, **changed})
        except ExpressionError as error:
            run.fail(None, f"refreshing {', '.join(sorted(changed))}: {error}")
            return
    window = _history_window(run, event.record_every)
    for name, value in changed.items():
        old = run.variables.get(name)
        run.variables[name] = value
        if window is not None:
            if run.recorded.get(name) == window:
                continue  # told already in this interval: the instance row has the value
            run.recorded[name] = window
        run.record(None, "variable_changed", f"{name}: {old!r} -> {value!r}", name=name, old=old, new=value)
    for name in event.missing:
        run.record(None, "variable_missing", f"source of variable '{name}' matched nothing in the message", name=name)
    _recheck_waits(run)


def _recheck_waits(run: Run) -> None:
    """Waiting tokens whose condition may hold now; a condition that fails fails the instance."""
    for token in list(run.tokens.values()):
        if token.waiting == WAIT_CONDITION and run.status == "running":
            try:
                activities.recheck_wait(run, token)
            except ExpressionError as error:
                run.fail(token.activity_id, f"wait '{token.activity_id}': {error}")


def _history_window(run: Run, every: float) -> int | None:
    """Which HISTORY_REFRESH_INTERVAL of the instance's life `now` falls in; None records every change."""
    started = run.instance.started_at
    if every <= 0 or started is None:
        return None
    return int((run.now - started).total_seconds() // every)


def _timer_fired(run: Run, event: TimerFired) -> None:
    token = next((t for t in run.tokens.values() if t.timer_id == event.timer_id), None)
    if token is None:
        return
    activity = run.definition.activities[token.activity_id]
    token = run.update(token, timer_id=None)
    if activity.type == "timer":
        activities.continue_after(run, activity, token, timer=event.timer_id)
    elif activity.type == "wait":
        run.record(activity.id, "timeout", "wait timed out")
        target = activity.timeout_path or activity.next
        if target:
            run.move(token, target)
        else:
            run.fail(activity.id, "wait timed out with nowhere to go")
    elif activity.type == "service" and token.waiting == WAIT_TIMER:
        activities.request_action(run, activity, token, attempt=token.attempt + 1)


def _action_succeeded(run: Run, event: ActionSucceeded) -> None:
    token = run.tokens.get(event.token_id)
    if token is not None and token.waiting == WAIT_COMPENSATION and token.attempt == event.attempt:
        compensation.outcome(run, token, True, event.result)
        return
    if token is None or token.waiting != WAIT_ACTION or token.attempt != event.attempt:
        return
    activity = run.definition.activities[token.activity_id]
    compensation.remember(run, activity, token, event.result)
    data = {"attempt": event.attempt}
    if event.result is not None:
        data["result"] = event.result
    activities.continue_after(run, activity, token, **data)


def _action_failed(run: Run, event: ActionFailed) -> None:
    token = run.tokens.get(event.token_id)
    if token is not None and token.waiting == WAIT_COMPENSATION and token.attempt == event.attempt:
        compensation.outcome(run, token, False, event.error)
        return
    if token is None or token.waiting != WAIT_ACTION or token.attempt != event.attempt:
        return
    activity = run.definition.activities[token.activity_id]
    run.record(activity.id, "action_failed", event.error, attempt=event.attempt, retriable=event.retriable)
    if event.retriable and event.attempt < activity.retry.max_attempts:
        due_at = run.now + retry_delay(activity, run.instance.id, event.attempt)
        token = run.update(token, waiting=WAIT_TIMER)
        activities.schedule(run, token, activity, due_at, "retry", f"retry{event.attempt}")
        run.record(activity.id, "retry_scheduled", None, attempt=event.attempt + 1, due_at=due_at.isoformat())
    elif activity.on_error:
        run.record(activity.id, "error_path", f"after {event.attempt} attempt(s): continuing with {activity.on_error}")
        run.move(token, activity.on_error)
    else:
        run.update(token, waiting="failed")
        run.fail(activity.id, f"action '{activity.action}' failed after {event.attempt} attempt(s): {event.error}")


def retry_delay(activity: Activity, instance_id: str, attempt: int) -> timedelta:
    """Exponential backoff with jitter derived from the step itself, so it stays deterministic."""
    base = activity.retry.delay(attempt)
    digest = hashlib.blake2b(f"{instance_id}:{activity.id}:{attempt}".encode(), digest_size=4).digest()
    spread = (int.from_bytes(digest, "big") / 0xFFFFFFFF) * 2 - 1  # in [-1, 1]
    return base * (1 + activity.retry.jitter * spread)


def _control(run: Run, event: Cancel | Fail | Suspend | Resume | Retry) -> None:
    if isinstance(event, Fail) and run.status in ("running", "suspended"):
        run.status = "running"  # a suspended instance fails too: fail() acts on running ones
        run.parked.clear()
        run.fail(None, event.reason)
    elif isinstance(event, Cancel) and run.status in ("running", "suspended"):
        if compensation.cancel(run, event.reason):
            return  # the instance is cancelled once its completed activities are undone
        run.drop_timers()
        run.status = "cancelled"
        run.completed_at = run.now
        run.parked.clear()
        run.record(None, "cancelled", event.reason)
    elif isinstance(event, Suspend) and run.status == "running":
        run.status = "suspended"
        run.record(None, "suspended", event.reason)
    elif isinstance(event, Resume) and run.status == "suspended":
        _resume(run)
    elif isinstance(event, Retry) and run.status == "failed":
        _retry(run)


def _resume(run: Run) -> None:
    run.status = "running"
    run.record(None, "resumed", None, parked=len(run.parked))
    parked, run.parked = run.parked, []
    for item in parked:
        fields = {k: v for k, v in item.items() if k != "type"}
        _apply(run, PARKED_EVENTS[item["type"]](**fields))
        _walk(run)
    _recheck_waits(run)


def _retry(run: Run) -> None:
    run.status = "running"
    run.error = None
    run.completed_at = None
    run.record(None, "retried", "instance retried from the failed activity")
    for token in list(run.tokens.values()):
        if token.waiting in ("failed", None):
            run.update(token, waiting=None, attempt=0)
            run.ready.append(token.id)
