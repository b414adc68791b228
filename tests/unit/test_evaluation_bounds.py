"""Bounded evaluation: past a bound the instance fails with the reason, quickly and in little memory; the next one runs."""

from __future__ import annotations

import resource
import time

import pytest

from process_engine.domain import expression_limits as limits
from process_engine.domain.errors import LimitExceeded
from process_engine.domain.expressions import compile_expression
from process_engine.engine import Start, VariablesRefreshed, advance
from tests.unit.walking import T0, definition_from

HEAD = """
id: bounded
trigger: {type: kafka, topic: t, correlate: tags.id}
variables:
  - {name: id, source: tags.id}
  - {name: reading, source: fields.reading}
  # what the tests start instances with (declared: validate refuses unknown names)
  - {name: a, source: fields.a}
  - {name: b, source: fields.b}
  - {name: items, source: fields.items}
  - {name: i, source: fields.i}
  - {name: l, source: fields.l}
  - {name: n, source: fields.n}
  - {name: s, source: fields.s}
  - {name: x, source: fields.x}
  - {name: y, source: fields.y}
activities:
  - {id: start, type: start}
"""


def flow(*activities: str) -> str:
    return HEAD + "".join(f"  - {activity}\n" for activity in activities) + "  - {id: done, type: end}\n"


def loop(assignment: str, condition: str) -> str:
    """A decision loop: assign, then go round again while the condition holds."""
    return flow(
        f"{{id: grow, type: set, set: {assignment}}}",
        f"{{id: again, type: decision, condition: {condition!r}, true_path: grow, false_path: done}}",
    )


def run(text: str, **variables):
    """Start one instance; return it with the CPU seconds and the peak-memory growth (KiB) it took."""
    definition = definition_from(text)
    peak, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.process_time()
    instance, _ = advance(definition, None, Start("i-1", variables), T0)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    return definition, instance, time.process_time() - started, grown


def assert_next_instance_runs(definition) -> None:
    instance, _ = advance(definition, None, Start("i-2", {"s": "x", "n": 2, "items": [1]}), T0)
    assert instance.status in ("completed", "failed")
    small, _ = advance(definition_from(flow("{id: fine, type: set, set: {y: '${x} + 1'}}")), None, Start("i-3", {"x": 1}), T0)
    assert small.status == "completed" and small.variables["y"] == 2


@pytest.mark.parametrize(
    ("text", "variables", "reason"),
    [
        (flow("{id: grow, type: set, set: {s: \"'x' * ${n}\"}}"), {"n": 2**21},
         "set 'grow': expression \"'x' * ${n}\" failed: string result of * is above the limit of 1 MiB"),
        (flow("{id: grow, type: set, set: {s: 'str([${s}, ${s}, ${s}, ${s}, ${s}, ${s}, ${s}, ${s}])'}}"), {"s": "x" * 200_000},
         "string result of str() is above the limit of 1 MiB"),
        (flow("{id: grow, type: set, set: {letters: \"sorted('ab' * ${n})\"}}"), {"n": 60_000},
         "list result of sorted() is above the limit of 100,000 items: 120,000"),
        (flow("{id: grow, type: set, set: {items: '${items} + ${items}'}}"), {"items": [0] * 60_000},
         "list result of + is above the limit of 100,000 items: 120,000"),
        (flow("{id: grow, type: set, set: {n: '${n} * ${n}'}}"), {"n": 2**4000},
         "integer result of * is above the limit of 4,096 bits"),
        (flow("{id: grow, type: set, set: {n: '${n} ** 10000'}}"), {"n": 2},
         "integer result of ** is above the limit of 4,096 bits: 10,000 bits"),
        (flow("{id: grow, type: set, set: {n: '${n} << 5000'}}"), {"n": 1},
         "integer result of left shift is above the limit of 4,096 bits"),
    ],
)
def test_a_result_past_a_bound_fails_the_instance_before_the_work(text, variables, reason) -> None:
    definition, instance, cpu, grown = run(text, **variables)
    assert instance.status == "failed"
    assert reason in instance.error
    assert cpu < 0.5 and grown < 100_000
    assert_next_instance_runs(definition)


def test_the_list_doubling_loop_stops_at_a_bound() -> None:
    definition, instance, cpu, grown = run(loop("{items: '${items} + ${items}'}", "len(${items}) < 10**12"), items=[1])
    assert instance.status == "failed"
    assert "limit" in instance.error
    assert cpu < 1.0 and grown < 200_000
    assert_next_instance_runs(definition)


def test_squaring_2_to_the_10000_is_refused_before_multiplying() -> None:
    definition, instance, cpu, _ = run(loop("{n: '${n} * ${n}'}", "${n} > 0"), n=2**4000)
    assert "integer result of * is above the limit of 4,096 bits" in instance.error
    assert cpu < 0.2


def test_variables_over_256_kib_fail_the_instance_and_keep_the_last_good_values() -> None:
    definition, instance, _, _ = run(flow("{id: grow, type: set, set: {s: \"'x' * 300000\"}}"), s="small")
    assert instance.status == "failed"
    assert "set 'grow': the instance's variables take more than 256 KiB as JSON (the limit)" in instance.error
    assert instance.variables["s"] == "small"  # the step's assignment was not kept
    assert_next_instance_runs(definition)


def test_one_big_list_held_many_times_is_refused_without_building_its_json() -> None:
    text = loop("{items: '[${items}, ${items}, ${items}, ${items}, ${items}, ${items}, ${items}, ${items}]'}", "True")
    definition, instance, cpu, grown = run(text, items=[0] * 1000)
    assert "variables take more than 256 KiB as JSON" in instance.error
    assert cpu < 0.5 and grown < 100_000


def test_variables_nested_past_100_levels_are_refused() -> None:
    definition, instance, _, _ = run(loop("{items: '[${items}]'}", "True"), items=[])
    assert "nests deeper than 100 levels" in instance.error


def test_a_refresh_past_256_kib_fails_the_instance() -> None:
    text = flow("{id: hold, type: wait, condition: '${reading} > 100'}")
    definition = definition_from(text)
    instance, _ = advance(definition, None, Start("i-1", {"id": "a", "reading": 1}), T0)
    assert instance.status == "running"
    instance, _ = advance(definition, instance, VariablesRefreshed({"reading": "x" * 300_000}), T0)
    assert instance.status == "failed"
    assert "refreshing reading: the instance's variables take more than 256 KiB" in instance.error
    assert instance.variables["reading"] == 1


def test_a_start_past_256_kib_fails_the_instance() -> None:
    _, instance, _, _ = run(flow(), reading="x" * 300_000)
    assert instance.status == "failed" and "256 KiB" in instance.error


def test_a_step_stops_after_50_ms_of_cpu() -> None:
    # Each round sorts 60,000 items (a few ms): 900 rounds would take seconds.
    text = loop("{i: '${i} + 1'}", "len(sorted(${items})) > 0 and ${i} < 900")
    definition, instance, cpu, _ = run(text, items=[0] * 60_000, i=0)
    assert instance.status == "failed"
    assert "the step used more than 50 ms of CPU (the limit per step)" in instance.error
    assert cpu < 0.5
    assert_next_instance_runs(definition)


def test_one_long_evaluation_checks_the_clock_too() -> None:
    comparisons = " and ".join(["${a} == ${b}"] * 200)
    expression = compile_expression(comparisons)
    budget = limits.CpuBudget(0.001)
    big = list(range(60_000))
    with pytest.raises(LimitExceeded, match="ms of CPU"):
        expression.evaluate({"a": big, "b": list(big)}, budget=budget)


def test_what_one_evaluation_builds_in_all_is_bounded() -> None:
    parts = ", ".join(["${l} + []"] * 40)  # 40 copies of a 60,000-item list
    with pytest.raises(LimitExceeded, match="built more than 16 MiB"):
        compile_expression(f"[{parts}]").evaluate({"l": [0] * 60_000})


def test_a_budget_starts_at_its_first_check_and_refuses_once_spent() -> None:
    budget = limits.CpuBudget(0.002)
    budget.check()
    started = time.thread_time()
    while time.thread_time() - started < 0.005:
        pass
    with pytest.raises(LimitExceeded, match="more than 2 ms of CPU"):
        budget.check()


def test_bounded_checks_leave_ordinary_expressions_alone() -> None:
    expression = compile_expression("${a} * 2 ** 10 + len(str([${s}, ${s}])) if ${a} < 10 else sorted([3, 1])")
    assert expression.evaluate({"a": 1, "s": "x" * 1000}) == 1024 + len(str(["x" * 1000] * 2))
    assert compile_expression("2 ** 4095 > 0").evaluate({}) is True
    assert compile_expression("len('x' * 1048576)").evaluate({}) == 1048576


def test_the_variables_limit_counts_characters_not_utf8_bytes() -> None:
    wide = "é" * 200_000  # 400,000 bytes of UTF-8, 200,000 characters
    limits.check_variables({"s": wide})
    with pytest.raises(LimitExceeded, match="256 KiB"):
        limits.check_variables({"s": wide + "é" * 100_000})


def test_the_variables_limit_measures_what_the_encoder_will_not_take() -> None:
    limits.check_variables({1: "a", None: 2.5, "n": 2**100})  # keys that are not text, an integer past 64 bits
    with pytest.raises(LimitExceeded, match="256 KiB"):
        limits.check_variables({"n": [2**100] * 20_000})
    with pytest.raises(LimitExceeded, match="256 KiB"):  # escaped as it is stored: six characters each
        limits.check_variables({"n": 2**64, "s": "\x01" * 50_000})
    deep: list = []
    for _ in range(99):
        deep = [deep]
    limits.check_variables({"deep": deep})  # past what orjson nests, within the limit of 100
