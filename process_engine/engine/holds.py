"""The per-key start rules of PRODUCT.md's telemetry holds, as pure functions of state and time.

`for`: the first matching message opens a hold, a non-matching one drops it, and
once it has been open for the duration the instance starts with the latest
variables. `count`/`within`: start on the n-th matching message within the window.
`cooldown`: after an instance of the key ends, matching messages start nothing for
a while. The host loads and stores the TriggerState; time comes in as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

from process_engine.domain.definition import Trigger
from process_engine.domain.trigger_state import TriggerState

# Event kinds and reasons, as the metrics count them.
OPENED, HELD, DROPPED, COMPLETED, SUPPRESSED = "opened", "held", "dropped", "completed", "suppressed"


class Reading(NamedTuple):
    """One message as the rules see it: did it match, and what would it start with."""

    matched: bool
    variables: dict[str, Any]
    document: Any
    missing: tuple[str, ...]
    cause: str


class HoldEvent(NamedTuple):
    """Something a rule did, for metrics and logs: `kind` and its `reason` (`for`, `count`, `cooldown`, ...)."""

    definition_id: str
    kind: str
    reason: str
    due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the rules decided: the key's state afterwards, and whether (and with what) to start."""

    state: TriggerState | None
    start: Reading | None = None
    events: tuple[HoldEvent, ...] = ()
    refresh: bool = False  # the message also refreshes the instance started from the hold


def fresh(trigger: Trigger, state: TriggerState | None, definition_version: int) -> tuple[TriggerState | None, tuple[HoldEvent, ...]]:
    """The state as the active trigger sees it: one kept under another trigger loses its hold and counts.

    A state written under a newer definition version than this one is left as it is:
    this replica has not loaded that version yet.
    """
    if state is None or state.trigger_hash == trigger.config_hash or state.definition_version > definition_version:
        return state, ()
    events = (HoldEvent(state.definition_id, DROPPED, "trigger_changed"),) if state.holding or state.counts else ()
    kept = replace(state.without_hold(), counts=(), trigger_hash=trigger.config_hash, definition_version=definition_version)
    return kept, events


def on_message(trigger: Trigger, state: TriggerState, reading: Reading, now: datetime) -> Outcome:
    """Apply one message of the key (no instance of the key is active)."""
    definition_id = state.definition_id
    if state.holding and state.due_at is not None and state.due_at <= now and not reading.matched:
        # The hold was complete before this message came: it starts as it would have on time.
        return _completed(state, now, refresh=True)
    if not reading.matched:
        if state.holding:
            return Outcome(state.without_hold(), events=(HoldEvent(definition_id, DROPPED, "condition"),))
        return Outcome(state)
    if state.cooldown_until is not None and now < state.cooldown_until:
        return Outcome(state, events=(HoldEvent(definition_id, SUPPRESSED, "cooldown"),))
    if trigger.hold_for is not None:
        return _hold(trigger, state, reading, now)
    if trigger.count is not None and trigger.within is not None:
        return _count(trigger, state, reading, now)
    return Outcome(state, start=reading)


def on_due(state: TriggerState, now: datetime) -> Outcome:
    """A hold whose time may be up (claimed by the host's due-time sweep)."""
    if not state.holding or state.due_at is None or state.due_at > now:
        return Outcome(state)
    return _completed(state, now)


def on_end(trigger: Trigger, state: TriggerState, ended_at: datetime) -> TriggerState:
    """An instance of the key ended: start the cooldown."""
    if trigger.cooldown is None:
        return state
    until = ended_at + trigger.cooldown
    if state.cooldown_until is not None and state.cooldown_until > until:
        return state
    return replace(state, cooldown_until=until)


def _hold(trigger: Trigger, state: TriggerState, reading: Reading, now: datetime) -> Outcome:
    assert trigger.hold_for is not None
    if state.holding and state.due_at is not None and state.due_at <= now:
        # At or after the due time: start at once, with this latest message's variables.
        ended = _keep(state, reading).without_hold()
        return Outcome(ended, start=reading, events=(HoldEvent(state.definition_id, COMPLETED, "for"),))
    if state.holding:
        return Outcome(_keep(state, reading), events=(HoldEvent(state.definition_id, HELD, "for"),))
    due = now + trigger.hold_for
    opened = replace(_keep(state, reading), held_since=now, due_at=due)
    return Outcome(opened, events=(HoldEvent(state.definition_id, OPENED, "for", due),))


def _count(trigger: Trigger, state: TriggerState, reading: Reading, now: datetime) -> Outcome:
    assert trigger.count is not None and trigger.within is not None
    since = now - trigger.within
    # Only the newest count - 1 times can still be part of a window: the state stays bounded.
    recent = tuple(t for t in state.counts if t > since)[-(trigger.count - 1):] if trigger.count > 1 else ()
    if len(recent) + 1 >= trigger.count:
        return Outcome(replace(state, counts=()), start=reading, events=(HoldEvent(state.definition_id, COMPLETED, "count"),))
    return Outcome(replace(state, counts=(*recent, now)), events=(HoldEvent(state.definition_id, HELD, "count"),))


def _completed(state: TriggerState, now: datetime, refresh: bool = False) -> Outcome:
    assert state.variables is not None
    start = Reading(True, dict(state.variables), state.document, state.missing, state.cause or "hold")
    return Outcome(state.without_hold(), start=start, events=(HoldEvent(state.definition_id, COMPLETED, "for"),), refresh=refresh)


def _keep(state: TriggerState, reading: Reading) -> TriggerState:
    """The state holding this message's variables as the latest."""
    return replace(state, variables=dict(reading.variables), document=reading.document, missing=reading.missing, cause=reading.cause)
