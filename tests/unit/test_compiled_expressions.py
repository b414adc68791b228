"""Compiled expressions give what the asteval interpreter gives: the same values, the same errors, the same bounds."""

from __future__ import annotations

import pytest

from process_engine.domain.errors import ExpressionError, LimitExceeded
from process_engine.domain.expressions import compile_expression

MESSAGE = {
    "fields": {"temp": 26.5, "humidity": 40, "name": "boiler", "tags": ["a", "b"], "nested": {"deep": {"x": 3}}},
    "tags": {"device_id": "hp-1"},
    "count": 7,
    "items": [1, 2, 3],
    "keys": "a key named keys",
}
VARIABLES = {"threshold": 25.0, "device_id": "hp-1", "levels": [10, 20, 30], "limits": {"high": 30}, "n": 3, "text": "ab"}
EXPRESSIONS = [
    "fields.temp > 25", "fields.temp > ${threshold}", "${threshold} < fields.temp <= 30", "not fields.temp > 25",
    "fields.temp > 25 and tags.device_id == 'hp-1'", "fields.humidity or 5", "fields.missing_or_not if count > 3 else 0",
    "count * 2 + 1", "count // 2", "count % 3", "-count", "~count", "+count", "count ** 2", "2 ** 0.5", "count << 3", "count >> 1",
    "count & 3 | 8 ^ 1", "items[0] + items[-1]", "items[1:]", "items[::-1]", "fields.tags[0] in ['a', 'c']", "'b' not in fields.tags",
    "len(items)", "max(items) - min(items)", "round(fields.temp, 1)", "sum(items)", "abs(-count)", "sorted(items, reverse=True)",
    "str(count) + 'x'", "int('12') + float('1.5')", "sqrt(16)", "floor(fields.temp)", "pi > 3", "{'a': count}['a']",
    "(count, 1)[1]", "{1, 2} == {2, 1}", "[count, 1]", "fields.nested.deep.x * ${n}",
    "${limits}['high'] > fields.temp", "${levels}[${n} - 1]", "text * 2", "message['count']", "message.count > 6",
    "keys == 'a key named keys'", "${device_id} == tags.device_id", "any([count > 5, False])", "all(items)",
    "count > 'a'", "fields.temp.x", "items.count", "fields.nope", "items[10]", "count / 0", "undefined_name > 1", "len(count)",
    "fields['nope']", "int('x')", "tags.device_id + 1", "fields.keys", "sum(['a'])", "count if fields.nope else 1",
]


def outcome(expression, *, compiled: bool):
    try:
        if compiled:
            return "value", expression.evaluate(VARIABLES, MESSAGE)
        symbols = expression._symbols(VARIABLES, MESSAGE)
        return "value", expression._interpreter().evaluate(expression._tree, symbols, expression.source)
    except ExpressionError as error:
        return "error", type(error).__name__, str(error).split(" failed: ", 1)[-1]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_a_compiled_expression_answers_as_the_interpreter_does(text: str) -> None:
    expression = compile_expression(text)
    assert expression._code is not None
    assert outcome(expression, compiled=True) == outcome(expression, compiled=False)


def test_dotted_access_reads_dict_keys_never_python_attributes() -> None:
    with pytest.raises(ExpressionError, match="has no key 'keys'"):
        compile_expression("limits.keys").evaluate({"limits": {"high": 1}})
    with pytest.raises(ExpressionError, match="has no fields"):
        compile_expression("text.upper").evaluate({"text": "ab"})
    with pytest.raises(ExpressionError, match="has no fields"):
        compile_expression("n.real").evaluate({"n": 3})
    assert compile_expression("d.keys").evaluate({"d": {"keys": 5}}) == 5


def test_no_builtin_is_reachable_by_name() -> None:
    for name in ("open", "len", "__import__", "globals", "eval"):
        with pytest.raises(ExpressionError):
            compile_expression(f"{name}").evaluate({})
    assert compile_expression("abs(-2)").evaluate({"abs": "a variable named abs"}) == 2


@pytest.mark.parametrize(
    ("text", "variables"),
    [
        ("text * n", {"text": "a" * 1024, "n": 10**6}),
        ("2 ** n", {"n": 10**6}),
        ("n << bits", {"n": 1, "bits": 10**6}),
        ("n * n", {"n": 1 << 4000}),
        ("str(big)", {"big": list(range(200_000))}),  # about 1.4 MB of text
        ("a + a", {"a": "x" * (700 * 1024)}),
    ],
)
def test_the_bounds_hold_in_compiled_code(text: str, variables: dict) -> None:
    with pytest.raises(LimitExceeded):
        compile_expression(text).evaluate(variables)
