"""Trigger matching: does a message start an instance, with which variables and key. Pure."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from process_engine.domain.definition import ProcessDefinition, Variable
from process_engine.domain.instance import InstanceState


class Match(NamedTuple):
    """What a message means for one definition (a tuple: one is made per message and definition)."""

    matched: bool
    variables: dict[str, Any]
    missing: tuple[str, ...]
    correlation_key: str | None


def extract(definition: ProcessDefinition, message: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The `source` variables a message carries, and the names whose source matched nothing."""
    values: dict[str, Any] = {}
    missing: list[str] = []
    for variable in definition.variables:
        if variable.source is None:
            continue
        found, value = variable.source.find(message)
        if found:
            values[variable.name] = value
        else:
            missing.append(variable.name)
    return values, tuple(missing)


# Without `correlate`, a keyed message is correlated by its Kafka key (keyed telemetry is
# one key per device); only unkeyed messages share one key for the whole topic (PRODUCT.md).
TOPIC_KEY = "*"


def correlation_key(definition: ProcessDefinition, message: Any, message_key: bytes | None = None) -> str | None:
    """The message's correlation key as text; None when `correlate` finds nothing.

    Without `correlate`: the Kafka message key, else TOPIC_KEY.
    """
    path = definition.trigger.correlate
    if path is None:
        return key_text(message_key) if message_key else TOPIC_KEY
    found, value = path.find(message)
    if not found or value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def key_text(message_key: bytes) -> str:
    """A Kafka key as a correlation key: its UTF-8 text, or `0x` and its hex when it is not text."""
    try:
        return message_key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + message_key.hex()


def key_function(definition: ProcessDefinition) -> Callable[[dict[str, Any], bytes | None], str | None]:
    """`correlation_key` for one definition, as a function of (message, Kafka key) made for a loop over many messages.

    A `correlate` of object keys alone that ends on text is followed in place;
    anything else takes `correlation_key` itself, so every answer is its answer.
    """

    def general(message: dict[str, Any], message_key: bytes | None) -> str | None:
        return correlation_key(definition, message, message_key)

    path = definition.trigger.correlate
    steps = path.keys if path is not None else None
    if not steps:
        return general

    def followed(message: dict[str, Any], message_key: bytes | None) -> str | None:
        value = _follow(message, steps)
        if value is _ABSENT:
            return None
        return value if type(value) is str else general(message, message_key)  # _OFF_PATH too

    return followed


_ABSENT = object()  # a key on the path is missing
_OFF_PATH = object()  # the path meets something other than an object


def _follow(document: Any, steps: Sequence[str]) -> Any:
    """The value at a path of object keys, as the JSONPath walk finds it in decoded JSON; _ABSENT or _OFF_PATH if none."""
    value = document
    for step in steps:
        if type(value) is not dict:
            return _OFF_PATH
        value = value.get(step, _ABSENT)
        if value is _ABSENT:
            return _ABSENT
    return value


def screener(definition: ProcessDefinition) -> Callable[[Mapping[str, Any]], bool]:
    """`screen` for one definition, bound to the calling thread: for that thread's loop over a batch."""
    condition = definition.trigger.condition
    if condition is None:
        return lambda message: True
    evaluate = condition.evaluator()
    variables = definition.condition_variables
    if variables:
        return lambda message: bool(evaluate(_condition_scope(variables, message), message))
    compared = condition.comparison()
    if compared is None:
        return lambda message: bool(evaluate({}, message))
    # The commonest telemetry condition, `fields.temp_c > 25`: the path followed in place and
    # compared as the compiled code would; anything irregular is evaluated as above.
    path, compare, constant = compared

    def irregular(message: Mapping[str, Any]) -> bool:
        return bool(evaluate({}, message))

    def direct(message: Mapping[str, Any]) -> bool:
        value = _follow(message, path)
        if value is _ABSENT or value is _OFF_PATH:
            return irregular(message)
        try:
            return bool(compare(value, constant))
        except Exception:  # text against a number: the evaluation says why
            return irregular(message)

    return direct


def _condition_scope(variables: Sequence[Variable], message: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the variables a condition reads, as the message has them."""
    scope: dict[str, Any] = {}
    for variable in variables:
        if variable.source is None:
            scope[variable.name] = variable.value
        else:
            found, value = variable.source.find(message)
            if found:
                scope[variable.name] = value
    return scope


def match(definition: ProcessDefinition, message: Mapping[str, Any], message_key: bytes | None = None) -> Match:
    """Evaluate the trigger condition and extract variables.

    Raises:
        ExpressionError: the condition failed at run time (the caller dead-letters the message).
    """
    return match_keyed(definition, message, correlation_key(definition, message, message_key))


def match_keyed(definition: ProcessDefinition, message: Mapping[str, Any], key: str | None) -> Match:
    """`match` with the correlation key already computed (the dispatcher needs it first, for its batch)."""
    return match_screened(definition, message, key, screen(definition, message))


def screen(definition: ProcessDefinition, message: Mapping[str, Any]) -> bool:
    """Whether the message meets the trigger condition, reading only the variables the condition names.

    The same answer as with every variable bound: the condition reads no other name.

    Raises:
        ExpressionError: the condition failed at run time.
    """
    condition = definition.trigger.condition
    if condition is None:
        return True
    return bool(condition.evaluate(_condition_scope(definition.condition_variables, message), message))


def match_screened(definition: ProcessDefinition, message: Mapping[str, Any], key: str | None, matched: bool) -> Match:
    """The match of a message already screened (`matched`): its variables extracted."""
    variables, missing = extract(definition, message)
    return Match(matched, variables, missing, key)


class Plan(NamedTuple):
    """What to do with a match, given the active instances with its key."""

    start: bool = False
    queue: bool = False  # start once the active instance with the key finishes
    refresh: tuple[str, ...] = ()  # instance ids whose source variables to refresh
    cancel: tuple[str, ...] = ()  # instance ids to cancel first (mode restart)


def plan(definition: ProcessDefinition, found: Match, active: Sequence[InstanceState]) -> Plan:
    """Apply the instance mode of PRODUCT.md.

    With a key and an active instance, every message refreshes it, matching or not;
    a matching one also starts (parallel), restarts (restart), queues (queued) or
    does nothing more (single).
    """
    running = [i.id for i in active if not is_queued(i)]
    if found.correlation_key is None or not running:
        return Plan(start=found.matched)
    mode = definition.trigger.mode
    if not found.matched:
        return Plan(refresh=tuple(running))
    if mode == "restart":
        return Plan(start=True, cancel=tuple(running))
    if mode == "queued":
        return Plan(queue=True, refresh=tuple(running))
    if mode == "parallel":
        return Plan(start=True, refresh=tuple(running))
    return Plan(refresh=tuple(running))


def is_queued(instance: InstanceState) -> bool:
    """A queued instance has been created but not started yet."""
    return instance.status == "running" and not instance.tokens and instance.completed_at is None and instance.next_token == 1
