"""Names a definition uses but never declares: caught when it loads, with a suggestion.

`${temprature}` in a decision, `${device}` in a notify template or `feilds.temp_c`
in a trigger condition would otherwise fail only when reached: after a two-minute
timer, or on every message.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from process_engine.domain.definition import Activity, ProcessDefinition
from process_engine.domain.expressions import CONSTANTS, Expression
from process_engine.domain.templates import Template

Fail = Callable[[tuple[Any, ...], str], None]
# What a trigger condition may name besides the definition's variables.
MESSAGE_NAMES = frozenset({"message"})


def suggestion(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a known name is close, else nothing."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_names(definition: ProcessDefinition, fail: Fail) -> None:
    """Report each unknown name through `fail(path, reason)`, once per place."""
    variables = {v.name for v in definition.variables}
    assigned = {name for a in definition.activities.values() for name, _ in a.assignments}
    known = variables | assigned | set(CONSTANTS)
    # A plug-in activity type may set any variable: names it could set are not guessed at.
    custom = any(a.handler is not None for a in definition.activities.values())
    for index, activity in enumerate(definition.activities.values()):
        path = ("activities", index)
        for field, reads in _reads(activity):
            for name in sorted(reads - known):
                if not custom:
                    fail(path + (field,), f"unknown variable '{name}' in {activity.type} '{activity.id}'{suggestion(name, known)}")
    _check_trigger(definition, known, fail)


def _reads(activity: Activity) -> list[tuple[str, set[str]]]:
    """(field, variable names read) for every expression and template of an activity."""
    found: list[tuple[str, set[str]]] = []
    for field in ("condition", "until"):
        expression = getattr(activity, field)
        if expression is not None:
            found.append((field, _expression_names(expression)))
    if activity.config is not None:
        found.append(("config", set(activity.config.names)))
    if activity.compensate is not None and activity.compensate.config is not None:
        found.append(("compensate", set(activity.compensate.config.names)))
    for name, value in activity.assignments:
        names = _expression_names(value) if isinstance(value, Expression) else set(value.names) if isinstance(value, Template) else set()
        found.append(("set", names))
    return found


def _expression_names(expression: Expression) -> set[str]:
    """`${name}` references and bare names, each by the variable it reads (`a.b` reads `a`)."""
    return set(expression.names) | expression.bare_names


def _check_trigger(definition: ProcessDefinition, known: set[str], fail: Fail) -> None:
    """A trigger condition reads the message: its bare names are the message's top-level keys.

    Which keys a message has is not known at load time, so only a name close to one
    the definition's sources read (`feilds` for `fields`), and not itself read by
    them, is an error.
    """
    condition = definition.trigger.condition
    if condition is None:
        return
    message_keys = {_first_key(v.source.source) for v in definition.variables if v.source is not None}
    known = known - set(CONSTANTS)  # a suggestion should name a variable, not `pi`
    for name in sorted(set(condition.names) - known):
        fail(("trigger", "condition"), f"unknown variable '{name}' in the trigger condition{suggestion(name, known)}")
    bare = condition.bare_names - known - set(CONSTANTS) - message_keys - MESSAGE_NAMES
    for name in sorted(bare):
        near = suggestion(name, message_keys | known)
        if near:
            fail(("trigger", "condition"), f"'{name}' in the trigger condition is neither a variable nor a message key "
                                           f"the definition reads{near}")


def _first_key(path: str) -> str:
    text = path[2:] if path.startswith("$.") else path
    return text.split(".", 1)[0].split("[", 1)[0]
