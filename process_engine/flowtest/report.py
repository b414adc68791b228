"""Checking expectations against a simulation, and telling the user: lines, diffs, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from itertools import groupby
from pathlib import Path
from typing import Any

from process_engine.flowtest.simulator import InstanceOutcome, Outcome
from process_engine.flowtest.spec import Expectation, format_duration

INDENT = "    "


@dataclass(frozen=True)
class Mismatch:
    """One expectation that did not hold: what, where it was written, and both sides as lines."""

    what: str
    line: int | None
    expected: list[str]
    actual: list[str]


@dataclass
class CaseResult:
    """The result of one test case, or of a test file that could not be run at all."""

    file: str
    definition_id: str
    name: str | None  # None: the file itself failed (malformed, definition missing)
    mismatches: list[Mismatch] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # `file:line: reason` lines
    seconds: float = 0.0
    definition_file: str | None = None  # the definition the test ran against

    @property
    def passed(self) -> bool:
        """No mismatch and no error."""
        return not self.mismatches and not self.errors

    @property
    def label(self) -> str:
        """`definition: test name`, or the file when the file itself failed."""
        return f"{self.definition_id}: {self.name}" if self.name is not None else self.file


# -- matching ---------------------------------------------------------------------
def matches(actual: Any, expected: Any) -> bool:
    """Mappings match on the keys given (recursively); lists item by item; the rest by equality."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and matches(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(matches, actual, expected))
    return actual == expected and isinstance(actual, bool) == isinstance(expected, bool)


def project(actual: Any, expected: Any) -> Any:
    """`actual` cut down to the keys `expected` names, so a diff shows only what was asked about."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: project(actual[k], v) for k, v in expected.items() if k in actual}
    if isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        return [project(a, e) for a, e in zip(actual, expected)]
    return actual


def render(value: Any) -> str:
    """One value on one line."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def compare(expectations: Sequence[Expectation], outcome: Outcome) -> list[Mismatch]:
    """Every expectation that does not hold for this outcome."""
    found: list[Mismatch] = []
    for expectation in expectations:
        found.extend(_COMPARERS[expectation.name](expectation, outcome))
    return found


def _count(expectation: Expectation, actual: int) -> list[Mismatch]:
    if actual == expectation.value:
        return []
    return [Mismatch(expectation.name, expectation.line, [str(expectation.value)], [str(actual)])]


def _per_instance(expectation: Expectation, outcome: Outcome) -> list[Mismatch]:
    """A single value applies to every instance; a list holds one value per instance."""
    name, value, instances = expectation.name, expectation.value, outcome.instances
    if _is_per_instance(name, value):
        found = []
        if len(value) != len(instances):
            found.append(Mismatch(f"{name}: one entry per instance", expectation.line, [f"{len(value)} instance(s)"], [f"{len(instances)} instance(s)"]))
        for expected, instance in zip(value, instances):
            found.extend(_instance_mismatch(expectation, expected, instance))
        return found
    if not instances:
        return [Mismatch(name, expectation.line, _lines(name, value, None), ["(no instance started)"])]
    return [m for instance in instances for m in _instance_mismatch(expectation, value, instance)]


def _is_per_instance(name: str, value: Any) -> bool:
    if not isinstance(value, list):
        return False
    return name != "path" or (bool(value) and all(isinstance(item, list) for item in value))


def _instance_mismatch(expectation: Expectation, expected: Any, instance: InstanceOutcome) -> list[Mismatch]:
    name = expectation.name
    actual = _INSTANCE_FIELDS[name](instance)
    if matches(actual, expected):
        return []
    return [Mismatch(f"{name} of instance {instance.number}", expectation.line, _lines(name, expected, None), _lines(name, actual, expected))]


def _lines(name: str, value: Any, expected: Any) -> list[str]:
    """A value as diffable lines; `expected` (when given) trims the actual side to what was asked."""
    if name == "path":
        return list(value)
    if name == "variables":
        wanted = expected if isinstance(expected, dict) else value
        return [f"{k}: {render(project(value[k], v)) if k in value else '(not set)'}" for k, v in wanted.items()]
    return [render(value)]


def _listed(expectation: Expectation, actual: list[dict[str, Any]]) -> list[Mismatch]:
    """Actions or timers: the same number, in order, each matching on the keys given.

    With the same number, each entry that differs is told field by field; otherwise
    the lists are diffed whole, since entries cannot be paired up.
    """
    expected = expectation.value
    if len(actual) == len(expected):
        return [
            Mismatch(f"{expectation.name}[{n}] ({_who(e)}) {path}", expectation.line, [render(want)], [got])
            for n, (a, e) in enumerate(zip(actual, expected), start=1)
            for path, want, got in differences(a, e)
        ]
    shown = [render(project(a, e)) for a, e in zip(actual, expected)] + [render(a) for a in actual[len(expected):]]
    return [Mismatch(expectation.name, expectation.line, [render(e) for e in expected], shown)]


def differences(actual: Any, expected: Any, path: str = "") -> list[tuple[str, Any, str]]:
    """(dotted path, expected, actual as text) for each field of `expected` that `actual` does not match."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key, want in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found.append((where, want, "(not set)"))
            else:
                found.extend(differences(actual[key], want, where))
        return found
    if matches(actual, expected):
        return []
    return [(path or "value", expected, render(actual))]


def _who(entry: Any) -> str:
    """How a listed entry is named in a mismatch: its activity, or its position."""
    return f"activity {entry['activity']}" if isinstance(entry, dict) and "activity" in entry else "entry"


def action_entries(outcome: Outcome) -> list[dict[str, Any]]:
    """Requested actions as flat mappings: who asked, the rendered config keys, the outcome."""
    entries = []
    for action in outcome.actions:
        config = action.config if isinstance(action.config, dict) else {"config": action.config}
        who = {"instance": outcome.number_of(action.instance_id), "activity": action.activity, "action": action.action}
        how = {"attempt": action.attempt, "outcome": action.outcome}
        # the engine's own keys win over a config key of the same name
        entries.append({**who, **{k: v for k, v in config.items() if k not in who and k not in how}, **how})
    return entries


def timer_entries(outcome: Outcome) -> list[dict[str, Any]]:
    """Scheduled timers as flat mappings, `after` in the short form users write."""
    return [
        {"instance": outcome.number_of(t.instance_id), "activity": t.activity, "kind": t.kind, "after": format_duration(t.after)}
        for t in outcome.timers
    ]


_INSTANCE_FIELDS: dict[str, Callable[[InstanceOutcome], Any]] = {
    "path": lambda i: list(i.path),
    "status": lambda i: i.status,
    "current_activity": lambda i: i.current_activity,
    "variables": lambda i: i.variables,
}

_COMPARERS: dict[str, Callable[[Expectation, Outcome], list[Mismatch]]] = {
    "instances": lambda e, o: _count(e, len(o.instances)),
    "dead_letters": lambda e, o: _count(e, o.dead_letters),
    "path": _per_instance,
    "status": _per_instance,
    "current_activity": _per_instance,
    "variables": _per_instance,
    "actions": lambda e, o: _listed(e, action_entries(o)),
    "timers": lambda e, o: _listed(e, timer_entries(o)),
}


# -- text output --------------------------------------------------------------------
def diff_lines(expected: list[str], actual: list[str]) -> list[str]:
    """A line diff: `  ` both, `- ` expected only, `+ ` actual only."""
    out: list[str] = []
    for tag, e1, e2, a1, a2 in SequenceMatcher(a=expected, b=actual, autojunk=False).get_opcodes():
        if tag == "equal":
            out.extend(f"  {line}" for line in expected[e1:e2])
            continue
        out.extend(f"- {line}" for line in expected[e1:e2])
        out.extend(f"+ {line}" for line in actual[a1:a2])
    return out


def explain(mismatch: Mismatch) -> list[str]:
    """A mismatch as indented lines: expected/actual for one value, a diff for several."""
    where = f" (line {mismatch.line})" if mismatch.line is not None else ""
    if len(mismatch.expected) == 1 and len(mismatch.actual) == 1:
        return [
            f"{mismatch.what}{where}:",
            f"  expected: {mismatch.expected[0]}",
            f"  actual:   {mismatch.actual[0]}",
        ]
    return [f"{mismatch.what}{where}: - expected, + actual", *diff_lines(mismatch.expected, mismatch.actual)]


def result_lines(result: CaseResult) -> list[str]:
    """`PASS label`, or `FAIL label` and what went wrong, indented."""
    if result.passed:
        return [f"PASS {result.label}"]
    details = list(result.errors)
    for mismatch in result.mismatches:
        details.extend(explain(mismatch))
    return [f"FAIL {result.label}", *(INDENT + line for line in details)]


def summary_line(results: Sequence[CaseResult]) -> str:
    """`3 passed, 1 failed`."""
    failed = sum(1 for r in results if not r.passed)
    return f"{len(results) - failed} passed, {failed} failed"


# -- JUnit --------------------------------------------------------------------------
def junit_xml(results: Sequence[CaseResult]) -> ElementTree.ElementTree:
    """A JUnit report: one testsuite per test file, one testcase per test."""
    root = ElementTree.Element("testsuites", name="process-engine flow tests")
    for file, group in groupby(results, key=lambda r: r.file):
        cases = list(group)
        suite = ElementTree.SubElement(root, "testsuite", name=file, tests=str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if not c.passed)))
        suite.set("errors", "0")
        suite.set("time", f"{sum(c.seconds for c in cases):.3f}")
        for case in cases:
            _junit_case(suite, case)
    _totals(root)
    return ElementTree.ElementTree(root)


def _junit_case(suite: ElementTree.Element, case: CaseResult) -> None:
    element = ElementTree.SubElement(suite, "testcase", classname=case.definition_id or case.file)
    element.set("name", case.name if case.name is not None else "(test file)")
    element.set("file", case.file)
    element.set("time", f"{case.seconds:.3f}")
    if case.passed:
        return
    lines = result_lines(case)[1:]
    first = case.errors[0] if case.errors else f"{case.mismatches[0].what} differs"
    failure = ElementTree.SubElement(element, "failure", message=first, type="malformed" if case.errors else "expectation")
    failure.text = "\n".join(line.removeprefix(INDENT) for line in lines)


def _totals(root: ElementTree.Element) -> None:
    for name in ("tests", "failures", "errors"):
        root.set(name, str(sum(int(suite.get(name, "0")) for suite in root)))


def write_junit(results: Sequence[CaseResult], path: str) -> None:
    """Write the JUnit report, creating its folder if needed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tree = junit_xml(results)
    ElementTree.indent(tree)
    tree.write(target, encoding="utf-8", xml_declaration=True)
