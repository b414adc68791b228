"""Sandboxed expressions: binding, dotted access, compile-time refusals, run-time errors."""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from process_engine.domain.errors import ExpressionError
from process_engine.domain.expressions import Expression, compile_expression

SEED_MESSAGE = {"fields": {"flow_temp_c": 26.5}, "tags": {"device_id": "hp-1"}}


def evaluate(text: str, variables: dict | None = None, message: dict | None = None):
    return compile_expression(text).evaluate(variables or {}, message)


def test_seed_trigger_condition_reads_message_fields_with_dots():
    condition = compile_expression("fields.flow_temp_c > 25.0")
    assert condition.evaluate({}, SEED_MESSAGE) is True
    assert condition.evaluate({}, {"fields": {"flow_temp_c": 24.0}}) is False


def test_yaml_block_text_with_trailing_newline_works():
    assert evaluate("fields.flow_temp_c > 25.0\n", message=SEED_MESSAGE) is True


def test_multi_line_yaml_block_works():
    text = "fields.flow_temp_c > 25.0 and\n  tags.device_id == 'hp-1'\n"
    assert evaluate(text, message=SEED_MESSAGE) is True


def test_variable_references_are_bound_as_values():
    expression = compile_expression("${temperature} > ${threshold}")
    assert expression.names == frozenset({"temperature", "threshold"})
    assert expression.evaluate({"temperature": 26.5, "threshold": 25.0}) is True
    assert expression.evaluate({"temperature": 20, "threshold": 25.0}) is False


def test_a_variable_holding_code_is_only_a_string():
    payload = "__import__('os').system('x')"
    assert evaluate("${command}", {"command": payload}) == payload
    assert evaluate("${command} == 'x'", {"command": payload}) is False


def test_bare_names_resolve_to_variables():
    assert evaluate("temperature + 1", {"temperature": 20}) == 21


def test_variables_win_over_message_keys():
    message = {"temperature": 1}
    assert evaluate("temperature", {"temperature": 2}, message) == 2


def test_message_itself_is_bound():
    assert evaluate("message.tags.device_id", message=SEED_MESSAGE) == "hp-1"
    assert evaluate("message['tags']['device_id']", message=SEED_MESSAGE) == "hp-1"


def test_dotted_and_item_access_on_dict_variables_nested():
    device = {"id": "hp-1", "limits": {"max": 70}, "sensors": [{"name": "flow"}]}
    assert evaluate("${device.id}", {"device": device}) == "hp-1"
    assert evaluate("device.limits.max", {"device": device}) == 70
    assert evaluate("device['limits']['max']", {"device": device}) == 70
    assert evaluate("device.sensors[0].name", {"device": device}) == "flow"


def test_results_are_plain_python_values():
    result = evaluate("fields", message=SEED_MESSAGE)
    assert type(result) is dict
    assert result == {"flow_temp_c": 26.5}


def test_missing_key_via_attribute_names_it():
    with pytest.raises(ExpressionError, match="fields has no key 'x'"):
        evaluate("fields.x > 1", message=SEED_MESSAGE)


def test_dotted_access_on_a_non_object_is_a_clear_error():
    with pytest.raises(ExpressionError, match="has no fields"):
        evaluate("${value}.x", {"value": 3})


def test_allowed_syntax():
    variables = {"a": 3, "b": [1, 2, 3], "s": "hp-1"}
    assert evaluate("'big' if a > 2 else 'small'", variables) == "big"
    assert evaluate("2 in b and not 5 in b", variables) is True
    assert evaluate("s[:2] == 'hp' and len(s) == 4", variables) is True
    assert evaluate("round(max(b) / 2, 1) + abs(-1) + sum(b)", variables) == 8.5
    assert evaluate("sorted([3, 1, 2], reverse=True)", variables) == [3, 2, 1]
    assert evaluate("1 < a <= 3 or a is None", variables) is True
    assert evaluate("{'k': a}['k'] * 2 ** 3", variables) == 24
    assert evaluate("floor(pi) + int('4') + float(str(1))", variables) == 8.0


def test_a_variable_named_like_a_function_does_not_shadow_it():
    assert evaluate("max(max, 1)", {"max": 5}) == 5


def test_names_that_are_not_identifiers_get_safe_aliases():
    assert evaluate("${flow-temp} + 1", {"flow-temp": 2}) == 3
    assert evaluate("${class} * 2", {"class": 2}) == 4


@pytest.mark.parametrize(
    "text",
    [
        "open('/etc/passwd').read()",
        "open('/etc/passwd')",
        "import os",
        "from os import system",
        "__import__('os')",
        "().__class__.__bases__[0].__subclasses__()",
        "x.__class__",
        "getattr(x, '__class__')",
        "(lambda: 1)()",
        "def f(): pass",
        "class A: pass",
        "while True: pass",
        "for x in [1]: pass",
        "[x for x in range(10**9)]",
        "{x: 1 for x in [1]}",
        "exec('1')",
        "eval('1')",
        "globals()",
        "locals()",
        "vars()",
        "dir()",
        "type(1)",
        "print(1)",
        "compile('1', 'f', 'eval')",
        "x = 1",
        "(x := 1)",
        "f'{x}'",
        "'abc'.upper()",
        "__builtins__",
        "max(*[1, 2])",
        "dict(**{'a': 1})",
    ],
)
def test_sandbox_escapes_are_refused_at_compile_time(text):
    with pytest.raises(ExpressionError, match="is refused"):
        compile_expression(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9**9**9", "exponent"),
        ("'a' * 10**9", r"string result of \* is above the limit of 1 MiB"),
        ("[0] * 10**9", "repeating a list"),
        ("'%0999999999d' % 1", "%-formatting"),
        ("1 << 10**6", "left shift"),
    ],
)
def test_resource_bombs_in_literals_fail_at_compile_time(text, reason):
    with pytest.raises(ExpressionError, match=reason):
        compile_expression(text)


@pytest.mark.parametrize(
    ("text", "variables", "reason"),
    [
        ("${base} ** ${exponent}", {"base": 9, "exponent": 10**9}, "exponent"),
        ("${base} ** 10000", {"base": 10**100}, "bits"),
        ("${text} * ${count}", {"text": "a", "count": 10**9}, "string result"),
        ("round(${number}, ${digits})", {"number": 5, "digits": -(10**9)}, "digits"),
        ("sum(${lists}, [])", {"lists": [[1], [2]]}, "numbers only"),
    ],
)
def test_resource_bombs_from_variables_fail_at_run_time(text, variables, reason):
    expression = compile_expression(text)
    with pytest.raises(ExpressionError, match=reason):
        expression.evaluate(variables)


def test_refusal_names_the_reason():
    with pytest.raises(ExpressionError, match="function open\\(\\) is not allowed"):
        compile_expression("open('/etc/passwd')")
    with pytest.raises(ExpressionError, match="attribute '__class__' is not allowed"):
        compile_expression("x.__class__")
    with pytest.raises(ExpressionError, match="lambda is not allowed"):
        compile_expression("(lambda: 1)()")


def test_missing_name_is_an_expression_error_with_the_text():
    with pytest.raises(ExpressionError, match=r"'\$\{missing\} > 1'.*NameError.*'missing'"):
        evaluate("${missing} > 1")


def test_division_by_zero_is_an_expression_error_with_the_text():
    with pytest.raises(ExpressionError, match=r"'1 / \$\{x\}' failed: ZeroDivisionError"):
        evaluate("1 / ${x}", {"x": 0})


def test_type_error_is_an_expression_error():
    with pytest.raises(ExpressionError, match="TypeError"):
        evaluate("${a} > 1", {"a": "text"})


def test_missing_index_and_key_are_clear():
    with pytest.raises(ExpressionError, match="has no index 5"):
        evaluate("${a}[5]", {"a": [1]})
    with pytest.raises(ExpressionError, match="has no key 'b'"):
        evaluate("${a}['b']", {"a": {}})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("a >", "syntax error"),
        ("a; b", "single expression"),
        ("${}", "empty"),
        ("${a", "without a closing"),
        ("status == '${expected}'", "inside quotes"),
        ("x" * 4097, "longer than 4 KiB"),
    ],
)
def test_malformed_expressions_are_rejected(text, reason):
    with pytest.raises(ExpressionError, match=reason):
        compile_expression(text)


def test_non_text_is_rejected():
    with pytest.raises(ExpressionError, match="must be text"):
        compile_expression(42)  # type: ignore[arg-type]


def test_no_state_leaks_between_evaluations():
    expression = compile_expression("temperature > 1")
    assert expression.evaluate({"temperature": 5}) is True
    with pytest.raises(ExpressionError, match="NameError"):
        expression.evaluate({})
    assert expression.evaluate({"temperature": 0}) is False


def test_message_keys_do_not_leak_into_later_evaluations():
    expression = compile_expression("flag")
    assert expression.evaluate({}, {"flag": True}) is True
    with pytest.raises(ExpressionError, match="NameError"):
        expression.evaluate({})


def test_evaluation_is_correct_across_threads():
    expression = compile_expression("${value} * 2")

    def double(value: int) -> int:
        return expression.evaluate({"value": value})

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(double, range(200))) == [value * 2 for value in range(200)]


def test_expressions_compare_by_source_and_survive_copies():
    expression = compile_expression("${a} + 1")
    assert expression == compile_expression("${a} + 1")
    assert isinstance(copy.deepcopy(expression), Expression)
    assert pickle.loads(pickle.dumps(expression)).evaluate({"a": 1}) == 2
    assert "a" in repr(expression)


@pytest.mark.parametrize(
    "text",
    ["x" + "+x" * 2000, "not " * 1000 + "x", "-" * 4000 + "1", "[" * 60 + "]" * 60, "f(" * 60 + ")" * 60],
)
def test_nesting_past_50_is_refused_on_the_parsed_tree(text):
    with pytest.raises(ExpressionError, match="nested deeper than 50 levels"):
        compile_expression(text)


@pytest.mark.parametrize("overflow", [MemoryError("Parser stack overflowed"), RecursionError("during ast construction")])
def test_the_parser_overflowing_its_stack_is_a_refusal_not_a_crash(monkeypatch, overflow):
    def parse(*args, **kwargs):
        raise overflow

    monkeypatch.setattr("process_engine.domain.expressions.ast", SimpleNamespace(parse=parse))
    with pytest.raises(ExpressionError, match="nested deeper than 50 levels"):
        compile_expression("not not x")


def test_an_expression_over_4_kib_of_utf8_is_refused():
    with pytest.raises(ExpressionError, match="longer than 4 KiB"):
        compile_expression("'" + "é" * 2100 + "'")
    assert compile_expression("'" + "x" * 4094 + "'").evaluate({}) == "x" * 4094


def test_long_error_texts_are_cut_short():
    with pytest.raises(ExpressionError) as failure:
        evaluate("${a}[${key}]", {"a": {}, "key": "k" * 100_000})
    assert len(str(failure.value)) < 600
