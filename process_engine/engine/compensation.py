"""Compensation (seed 000's CompensationHandler): undo completed service activities, last first.

A service activity with `compensate:` is remembered when it completes. When the
instance is cancelled or fails, or reaches a `compensate` activity, the pending
compensations are requested one at a time, newest first, through the outbox with
idempotency key `instance:activity:compensate`. History: `compensating` when one is
requested, `compensated` or `compensation_failed` when its outcome arrives. Then the
instance ends as it was going to (cancelled, failed), or the activity continues.
"""

from __future__ import annotations

from typing import Any

from process_engine.domain.definition import Activity
from process_engine.domain.errors import ExpressionError
from process_engine.domain.instance import WAIT_COMPENSATED, WAIT_COMPENSATION, Token
from process_engine.engine.commands import RunAction
from process_engine.engine.run import Run, continue_after


def remember(run: Run, activity: Activity, token: Token, result: Any) -> None:
    """A service activity with `compensate:` completed: it can be undone from now on."""
    if activity.compensate is None:
        return
    entry = {"activity": activity.id, "visit": token.visit, "result": result, "status": "pending"}
    run.compensations.append(entry)


def begin_activity(run: Run, activity: Activity, token: Token) -> None:
    """A `compensate` activity: undo what is pending, then continue with `next`."""
    if not run.pending_compensations():
        continue_after(run, activity, token, undone=0)
        return
    run.update(token, waiting=WAIT_COMPENSATED)
    run.compensating = {"end": None, "reason": None, "activity": activity.id, "token": token.id}


def cancel(run: Run, reason: str) -> bool:
    """Cancel by undoing first; False when there is nothing to undo (the caller cancels at once)."""
    if run.compensating is not None and run.compensating["end"] is not None:
        return True  # already ending: the compensations in flight finish first
    if run.compensating is None and not run.pending_compensations():
        return False
    run.end_after_compensation("cancelled", reason)
    return True


def proceed(run: Run) -> bool:
    """Request the next pending compensation, or finish when none is left (after every walk).

    Returns True when a `compensate` activity finished and its token is ready to walk on.
    """
    state = run.compensating
    if state is None or run.status != "running" or any(t.waiting == WAIT_COMPENSATION for t in run.tokens.values()):
        return False
    while True:
        pending = run.pending_compensations()
        if not pending:
            _finish(run, state)
            return bool(run.ready)
        if _request(run, pending[0]):
            return False


def outcome(run: Run, token: Token, succeeded: bool, detail: Any) -> None:
    """A compensation action's outcome arrived for `token`."""
    entry = next(e for e in run.compensations if e.get("token") == token.id and e["status"] == "running")
    if succeeded:
        _settle(run, entry, "done", "compensated", None, result=detail)
    else:
        _settle(run, entry, "failed", "compensation_failed", str(detail))
    run.remove(token)


def _request(run: Run, entry: dict[str, Any]) -> bool:
    """Ask for one compensation; False when it settled at once (nothing to send, or it cannot be built)."""
    activity = run.definition.activities.get(entry["activity"])
    compensation = activity.compensate if activity is not None else None
    if compensation is None:
        _settle(run, entry, "failed", "compensation_failed", f"activity '{entry['activity']}' has no compensation now")
        return False
    try:
        planned = _plan(run, activity, entry)
    except (ExpressionError, ValueError, TypeError) as error:
        _settle(run, entry, "failed", "compensation_failed", f"{type(error).__name__}: {error}")
        return False
    except Exception as error:  # a plug-in handler's bug fails this compensation, never the engine
        _settle(run, entry, "failed", "compensation_failed", f"handler raised {type(error).__name__}: {error}")
        return False
    if planned is None:
        _settle(run, entry, "done", "compensated", "nothing to undo")
        return False
    action, config = planned
    key = compensation_key(run.instance.id, entry["activity"], entry["visit"])
    token = run.new_token(entry["activity"])
    run.ready.remove(token.id)
    run.update(token, waiting=WAIT_COMPENSATION, attempt=1, visit=entry["visit"])
    _replace(run, entry, status="running", token=token.id)
    run.record(entry["activity"], "compensating", None, action=action, config=config, key=key)
    run.emit(RunAction(key, token.id, entry["activity"], action, config, 1))
    return True


def _plan(run: Run, activity: Activity, entry: dict[str, Any]) -> tuple[str, Any] | None:
    """The action and rendered config that undo `activity`: its own, or what its handler says."""
    compensation = activity.compensate
    if compensation.handler is None:
        config = compensation.config.render(run.variables) if compensation.config is not None else {}
        return compensation.action or "", config
    context = {"activity": activity.id, "action": activity.action, "options": dict(compensation.options),
               "variables": dict(run.variables), "result": entry.get("result")}
    planned = compensation.handler.compensate(context)
    if planned is None:
        return None
    if not isinstance(planned, dict) or not isinstance(planned.get("action"), str):
        raise TypeError(f"handler '{compensation.handler_name}' must return {{'action': ..., 'config': ...}} or None")
    return planned["action"], planned.get("config", {})


def compensation_key(instance_id: str, activity_id: str, visit: int) -> str:
    """`instance:activity:compensate`; a repeated visit of the activity is told apart."""
    place = activity_id if visit <= 1 else f"{activity_id}#{visit}"
    return f"{instance_id}:{place}:compensate"


def _settle(run: Run, entry: dict[str, Any], status: str, event: str, message: str | None, **data: Any) -> None:
    _replace(run, entry, status=status, token=None)
    run.record(entry["activity"], event, message, **{k: v for k, v in data.items() if v is not None})


def _replace(run: Run, entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Entries are shared with the frozen state the run started from: replace them, never mutate."""
    index = next(i for i, e in enumerate(run.compensations) if e["activity"] == entry["activity"] and e["visit"] == entry["visit"])
    run.compensations[index] = {**run.compensations[index], **changes}
    return run.compensations[index]


def _finish(run: Run, state: dict[str, Any]) -> None:
    run.compensating = None
    undone = sum(1 for e in run.compensations if e["status"] == "done")
    if state["end"] == "cancelled":
        run.status = "cancelled"
        run.completed_at = run.now
        run.record(None, "cancelled", state["reason"], compensated=undone)
    elif state["end"] == "failed":
        run.finish_failed(state["activity"], state["reason"])
    else:
        token = run.tokens.get(state["token"])
        activity = run.definition.activities[state["activity"]]
        if token is not None:
            continue_after(run, activity, token, undone=undone)
