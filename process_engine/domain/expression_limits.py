"""The bounds of evaluation: sizes, integer bits, nesting, variables' JSON size and a CPU budget.

Every check here is cheap (len(), bit_length(), one clock read every few dozen
operations) because expressions run on the hot path. A value past a bound raises
LimitExceeded, an ExpressionError, so the walker fails only the instance at hand.
"""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Mapping
from typing import Any

import orjson

from process_engine.domain.errors import LimitExceeded

MAX_EXPRESSION_BYTES = 4096
MAX_NESTING = 50
MAX_TEXT_LENGTH = 1024 * 1024  # characters of one string result
MAX_ITEMS = 100_000  # items of one list, tuple, dict or set result
MAX_INTEGER_BITS = 4096
MAX_EXPONENT = 10_000
MAX_ROUND_DIGITS = 400
MAX_VARIABLES_JSON = 256 * 1024  # characters of an instance's variables as compact JSON
MAX_VALUE_DEPTH = 100  # keeps stored variables within what JSON encoders accept
STEP_CPU_SECONDS = 0.050
# What one evaluation may build in all (characters + 8 per container item): a bound
# on memory kept alive within one expression, since each result alone is bounded.
MAX_BUILT_PER_EVALUATION = 16 * 1024 * 1024

TEXT_TYPES = (str, bytes)
CONTAINER_TYPES = (list, tuple, dict, set, frozenset)
SIZED_TYPES = frozenset(TEXT_TYPES + CONTAINER_TYPES)
_TEXT_TYPES = frozenset(TEXT_TYPES)
_CONTAINER_TYPES = frozenset(CONTAINER_TYPES)


class CpuBudget:
    """CPU time one step (or one evaluation) may spend, from `start()` or else from the first check.

    The only clock the core reads, and only as a guard: a step that stays inside the
    budget behaves exactly as if there were none. Thread time, so other threads'
    work is not counted against this one.
    """

    __slots__ = ("seconds", "deadline")

    def __init__(self, seconds: float = STEP_CPU_SECONDS):
        self.seconds = seconds
        self.deadline: float | None = None

    def start(self) -> CpuBudget:
        """Start the clock now."""
        self.deadline = time.thread_time() + self.seconds
        return self

    def check(self) -> None:
        """Raise LimitExceeded once the budget is spent."""
        now = time.thread_time()
        if self.deadline is None:
            self.deadline = now + self.seconds
        elif now > self.deadline:
            milliseconds = round(self.seconds * 1000)
            raise LimitExceeded(f"the step used more than {milliseconds} ms of CPU (the limit per step)")


def check_size(kind: type, size: int, operation: str) -> int:
    """Refuse a string or container result of `size` before or after it is built."""
    if kind in _TEXT_TYPES:
        if size > MAX_TEXT_LENGTH:
            raise LimitExceeded(
                f"string result of {operation} is above the limit of 1 MiB ({MAX_TEXT_LENGTH:,} characters): {size:,}"
            )
        return size
    if size > MAX_ITEMS:
        raise LimitExceeded(f"{kind.__name__} result of {operation} is above the limit of {MAX_ITEMS:,} items: {size:,}")
    return size * 8


def check_bits(bits: int, operation: str) -> None:
    """Refuse an integer result of `bits` bits, before the work of computing it when possible."""
    if bits > MAX_INTEGER_BITS:
        raise LimitExceeded(f"integer result of {operation} is above the limit of {MAX_INTEGER_BITS:,} bits: {bits:,} bits")


def nesting_depth(tree: ast.AST, limit: int = MAX_NESTING) -> int:
    """How deep expression nodes nest, counted without recursion; stops once past `limit`."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + isinstance(child, ast.expr)) for child in ast.iter_child_nodes(node))
    return deepest


def text_size(value: Any, limit: int = MAX_TEXT_LENGTH) -> int:
    """About how many characters str(value) gives, counted without building it; stops past `limit`."""
    return _measure(value, limit, 2)


def check_variables(variables: Mapping[str, Any], new: Mapping[str, Any] | None = None) -> None:
    """Refuse variables that take more than 256 KiB as JSON or nest deeper than 100 levels.

    Args:
        variables: all of the instance's variables after the change.
        new: the values an expression or a plug-in just made. They may hold one big
            value many times over (JSON far larger than memory), so they are measured
            first by a walk that stops at the limit; what is left is then small enough
            for the JSON encoder, whose exact count is fast.
    """
    if new is not None and _measure(new, MAX_VARIABLES_JSON, 1) > MAX_VARIABLES_JSON:
        _refuse_variables()
    try:
        encoded = orjson.dumps(variables, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # integers past 64 bits, nesting past 255: the stdlib encoder takes them, escaping as stored
        try:
            size = len(json.dumps(variables, ensure_ascii=False, separators=(",", ":"), default=str))
        except (TypeError, ValueError, RecursionError):  # values nested too deep even for it
            size = _measure(variables, MAX_VARIABLES_JSON, 1)
    else:
        # UTF-8 bytes are at least as many as characters: only a long one needs counting.
        size = len(encoded) if len(encoded) <= MAX_VARIABLES_JSON else len(encoded.decode())
    if size > MAX_VARIABLES_JSON:
        _refuse_variables()


def _refuse_variables() -> None:
    raise LimitExceeded(
        f"the instance's variables take more than {MAX_VARIABLES_JSON // 1024} KiB as JSON "
        "(the limit); keep large values out of variables"
    )


def _measure(value: Any, limit: int, separator: int) -> int:
    """Length of `value` as JSON-like text in characters, stopping once past `limit`.

    Iterative, and stops early, so a list holding the same big list a thousand
    times costs no more than `limit` steps to refuse.
    """
    total = 0
    stack = [(value, 0)]
    while stack and total <= limit:
        item, depth = stack.pop()
        kind = type(item)
        if kind not in _CONTAINER_TYPES:
            total += _scalar_size(item)
            continue
        if depth >= MAX_VALUE_DEPTH:
            raise LimitExceeded(f"a value nests deeper than {MAX_VALUE_DEPTH} levels (the limit)")
        total += 2 + len(item) * separator
        if kind is dict:
            total += sum(_scalar_size(key) + separator for key in item)
            item = item.values()
        for child in item:  # scalars inline: most items are, and the stack costs more
            child_kind = type(child)
            if child_kind is str:
                total += len(child) + 2
            elif child_kind in _CONTAINER_TYPES:
                stack.append((child, depth + 1))
            else:
                total += _scalar_size(child)
    return total


def _scalar_size(value: Any) -> int:
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if type(value) is int:
        bits = value.bit_length()
        return len(str(value)) if bits < 64 else bits * 30103 // 100_000 + 2
    if type(value) is float:
        return len(repr(value))
    if isinstance(value, str):
        return len(value) + 2
    return len(str(value)) + 2  # datetimes and other values the store writes as text
