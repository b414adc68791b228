"""Property-style: thousands of generated hostile expressions and YAML documents, from a fixed seed.

Each must give a definition or DefinitionErrors with a specific reason (never the
catch-all, never a traceback) in well under 2 s of CPU; an expression that compiles
must evaluate or fail with ExpressionError, within its bounds, against hostile values.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.app import definition_extensions
from process_engine.cli import main
from process_engine.domain.errors import DefinitionErrors, ExpressionError
from process_engine.domain.expressions import compile_expression

SEED = 13
SECONDS_PER_INPUT = 2.0
TOKENS = [
    "x", "${x}", "${s}", "${l}", "${n}", "${d}", "${d.k}", "${", "}", "$", "(", ")", "[", "]", "{", "}", ",", ":",
    " + ", " - ", " * ", " ** ", " / ", " // ", " % ", " << ", " >> ", " & ", " | ", " ^ ", "~", "-", "not ",
    " and ", " or ", " if ", " else ", " in ", " is ", " == ", " < ", " >= ", ".", "[0]", "[1:]", "[::-1]",
    "str(", "sorted(", "len(", "sum(", "int(", "max(", "round(", "abs(", "float(", "sqrt(", "exp(",
    "9", "10**9", "4096", "2**4000", "-1", "1e308", "0.5", "'a'", "'ab' * 1000", "\"q\"", "'''", "'\\x00'",
    "True", "None", "lambda: 0", "import os", "__class__", "__import__", "x.__dict__", "f'{x}'", "[y for y in x]",
    "(x := 1)", "*x", "**x", "'é'", "\n", "\\", "#", ";", "@",
]  # fmt: skip
BOMBS = [
    "9**9**9", "'a' * 10**9", "(1 << 4000) * (1 << 4000)", "[1] * 10**9", "str([${s}, ${s}, ${s}, ${s}])",
    "${n} * ${n}", "${n} ** ${n}", "${s} * ${n}", "${l} + ${l}", "sorted(${s} * 10)", "int('1' * 4000, 2)",
    "${x} << 10**6", "round(1, -10**9)", "sum(${l}, [])", "'%999999999d' % 1", "2 ** 4096 * 2 ** 4096",
]  # fmt: skip
NESTERS = [
    lambda k: "x" + "+x" * k, lambda k: "not " * k + "x", lambda k: "-" * k + "1",
    lambda k: "(" * k + "x" + ")" * k, lambda k: "[" * k + "]" * k, lambda k: "str(" * k + "1" + ")" * k,
    lambda k: "x" + "[0]" * k, lambda k: "x" + ".a" * k, lambda k: "${x}" + " ** ${x}" * k,
]  # fmt: skip
GOOD = """id: {id}
name: hostile
trigger:
  type: kafka
  topic: t
  correlate: {correlate}
  condition: {condition}
variables:
  - name: x
    source: {source}
  - name: s
    value: {value}
activities:
  - id: start
    type: start
  - id: decide
    type: decision
    condition: {condition}
    true_path: assign
    false_path: later
  - id: assign
    type: set
    set:
      y: {condition}
  - id: later
    type: timer
    {timer}
    next: done
  - id: done
    type: end
"""
YAML_JUNK = [
    "&a", "*a", "!!str", "!!omap", "!!python/object:os.system", "!x", "<<: *a", "? [a]\n: b", "%YAML 1.1\n---",
    "---\n", "...\n", "[", "]", "{", "}", "'", '"', "\t", "\x00", "\ufeff", "- ", ": ", "#", "|", ">", "@", "`",
    "2024-01-01", "1e400", "0x" + "f" * 50, "9" * 5000, ".inf", "~", "yes", "\r", "\\u0000",
]  # fmt: skip
VARIABLES = {"x": 3, "s": "s" * 500_000, "l": [0] * 60_000, "n": 2**4000, "d": {"k": [1, 2]}}


def hostile_expression(rng: random.Random) -> str:
    """One expression from the mix: token soup, known bombs, deep nesting or an oversized text."""
    kind = rng.random()
    if kind < 0.45:
        return "".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 40)))
    if kind < 0.65:
        return rng.choice(BOMBS) + rng.choice(["", " > 1", " + ${x}", " == ${s}"])
    if kind < 0.9:
        return rng.choice(NESTERS)(rng.choice([10, 49, 50, 51, 200, 1000, 2100, 5000]))
    return rng.choice(TOKENS).strip() * rng.randint(1000, 3000)


def hostile_document(rng: random.Random, index: int) -> str:
    """A definition whose slots hold hostile values (each half the time), mutated at the byte level now and then."""

    def pick(benign: str, *hostile: str) -> str:
        return benign if rng.random() < 0.5 else rng.choice(hostile)

    fields = {
        "id": pick(f"d{index}", "!!str [a]", "&id x", "[a, b]", "''", "9" * 400, "*x"),
        "correlate": pick("tags.id", "$..x", "$.a[?(@.b =~ '^(a+)+$')]", "$.a * $.b", "a." * 300 + "b", "[", '"$[*]"'),
        "condition": repr_yaml(pick("${x} > 1", hostile_expression(rng))),
        "source": pick("fields.x", "$.x[*]", "$.x.`sub(/(a+)+$/, b)`", "x" + "[*]" * 80, "{a: b}", "$"),
        "value": pick("1", "[1, 2]", "{a: {b: {c: 1}}}", "[" * 100 + "]" * 100, "2024-01-01", "!!binary aGk=", "*a"),
        "timer": pick("duration: 5m", "duration: 99999999999d", "until: " + repr_yaml(hostile_expression(rng)), "duration: [1]"),
    }
    text = GOOD.format(**fields)
    for _ in range(rng.choice([0, 0, 0, 1, 3, 10])):
        at = rng.randrange(len(text) + 1)
        text = text[:at] + rng.choice(YAML_JUNK) + text[at + rng.choice([0, 0, 1, 5]) :]
    return text


def repr_yaml(expression: str) -> str:
    """An expression as a YAML double-quoted scalar."""
    escaped = expression.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\x00", "\\0")
    return f'"{escaped}"'


def timed(function, *args):
    """Call and return (outcome, CPU seconds); the outcome is the result or the exception raised."""
    started = time.process_time()
    try:
        outcome = function(*args)
    except Exception as error:  # noqa: BLE001 - which exception it was is what the test checks
        outcome = error
    return outcome, time.process_time() - started


def test_generated_hostile_expressions_compile_or_are_refused_and_evaluate_within_bounds() -> None:
    rng = random.Random(SEED)
    compiled = 0
    for _ in range(2500):
        text = hostile_expression(rng)
        expression, seconds = timed(compile_expression, text)
        assert seconds < SECONDS_PER_INPUT, text[:200]
        if isinstance(expression, ExpressionError):
            continue
        assert not isinstance(expression, Exception), f"{type(expression).__name__} compiling {text[:200]!r}"
        compiled += 1
        result, seconds = timed(expression.evaluate, VARIABLES)
        assert seconds < SECONDS_PER_INPUT, text[:200]
        assert not isinstance(result, Exception) or isinstance(result, ExpressionError), f"{result!r} from {text[:200]!r}"
    assert compiled > 100  # the mix reaches the evaluator, not only the refusals


def test_generated_hostile_documents_load_or_give_file_line_reasons() -> None:
    rng = random.Random(SEED)
    extensions = definition_extensions()
    refused = 0
    for index in range(1500):
        text = hostile_document(rng, index)
        outcome, seconds = timed(load_text, text, f"d{index}.yaml", extensions)
        assert seconds < SECONDS_PER_INPUT, text[:300]
        if isinstance(outcome, DefinitionErrors):
            refused += 1
            for error in outcome.errors:
                assert error.file == f"d{index}.yaml" and error.line is not None, error
                assert not error.reason.startswith("cannot load the definition"), f"{error.reason} in {text[:300]!r}"
        else:
            assert not isinstance(outcome, Exception), f"{type(outcome).__name__}: {outcome} in {text[:300]!r}"
    assert refused > 500 and refused < 1450  # both ends of the mix are reached


@pytest.mark.parametrize("seed", [SEED])
def test_validate_over_a_folder_of_generated_files_prints_no_traceback(tmp_path: Path, capsys, seed: int) -> None:
    rng = random.Random(seed)
    for index in range(60):
        (tmp_path / f"d{index:02}.yaml").write_text(hostile_document(rng, index))
    started = time.process_time()
    assert main(["validate", str(tmp_path)]) in (0, 1)
    printed = capsys.readouterr()
    assert time.process_time() - started < 60 * SECONDS_PER_INPUT
    assert "Traceback" not in printed.err and "60 file(s) checked" in printed.out
    for line in printed.err.splitlines():
        assert line.startswith(str(tmp_path)) or not line.strip() or line.startswith(" "), line
