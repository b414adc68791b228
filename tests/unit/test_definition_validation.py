"""Every validation error names the file, the line and the reason."""

from __future__ import annotations

import pytest

from process_engine.adapters.definitions.yaml_loader import load_paths, load_text
from process_engine.app import definition_extensions
from process_engine.domain.errors import DefinitionErrors
from tests.unit.walking import PROCESSES, example

GOOD = """\
id: good
trigger:
  type: kafka
  topic: t
activities:
  - id: start
    type: start
  - id: done
    type: end
"""


def errors_of(text: str) -> list[tuple[int | None, str]]:
    """(line, reason) of each problem, in order."""
    with pytest.raises(DefinitionErrors) as caught:
        load_text(text, "bad.yaml", definition_extensions())
    assert all(error.file == "bad.yaml" for error in caught.value.errors)
    return [(error.line, error.reason) for error in caught.value.errors]


def with_activities(body: str, head: str = "") -> str:
    return f"id: x\n{head}trigger:\n  type: kafka\n  topic: t\nactivities:\n{body}"


def test_the_shipped_examples_load() -> None:
    result = load_paths([PROCESSES], definition_extensions())
    assert result.errors == []
    assert set(result.definitions) >= {"temperature-control", "boiler-pressure-watch", "freezer-door-alarm"}


def test_the_seed_example_keeps_its_shape() -> None:
    seed = example("temperature-control.yaml")
    assert seed.version == 1 and seed.trigger.topic == "heatpump-telemetry"
    assert seed.activity("start").next == "check_temp"  # the implicit next of the seed's start
    assert seed.activity("wait_recheck").duration.total_seconds() == 300


def test_malformed_yaml_names_the_line() -> None:
    [(line, reason)] = errors_of("id: x\ntrigger: {type: kafka\nactivities: []\n")
    assert line == 3 and "malformed YAML" in reason


def test_duplicate_yaml_keys_are_rejected() -> None:
    [(line, reason)] = errors_of("id: x\nid: y\n")
    assert line == 2 and "malformed YAML" in reason


def test_unknown_activity_target() -> None:
    text = with_activities("  - id: start\n    type: start\n    next: nowhere\n  - id: done\n    type: end\n")
    problems = errors_of(text)
    assert (8, "'next' of 'start' points at unknown activity 'nowhere'") in problems


@pytest.mark.parametrize("field", ["true_path", "false_path"])
def test_dangling_decision_paths(field: str) -> None:
    other = "false_path" if field == "true_path" else "true_path"
    body = (
        "  - id: start\n    type: start\n"
        f"  - id: pick\n    type: decision\n    condition: 1 > 0\n    {field}: ghost\n    {other}: done\n"
        "  - id: done\n    type: end\n"
    )
    problems = errors_of(with_activities(body))
    assert (11, f"'{field}' of 'pick' points at unknown activity 'ghost'") in problems


def test_dangling_on_error_timeout_path_and_branch() -> None:
    body = (
        "  - id: start\n    type: start\n"
        "  - id: call\n    type: service\n    action: log\n    config: {message: hi}\n    on_error: ghost1\n"
        "  - id: hold\n    type: wait\n    condition: 1 > 0\n    timeout: 5m\n    timeout_path: ghost2\n"
        "  - id: split\n    type: parallel\n    branches: [done, ghost3]\n"
        "  - id: done\n    type: end\n"
    )
    reasons = {reason: line for line, reason in errors_of(with_activities(body))}
    assert reasons["'on_error' of 'call' points at unknown activity 'ghost1'"] == 12
    assert reasons["'timeout_path' of 'hold' points at unknown activity 'ghost2'"] == 17
    assert reasons["branch of 'split' points at unknown activity 'ghost3'"] == 20


def test_duplicate_activity_id() -> None:
    body = "  - id: start\n    type: start\n  - id: start\n    type: end\n"
    assert (8, "duplicate activity id 'start'") in errors_of(with_activities(body))


def test_no_start() -> None:
    problems = errors_of(with_activities("  - id: done\n    type: end\n"))
    assert any("no 'start' activity" in reason and line == 5 for line, reason in problems)


def test_no_reachable_end() -> None:
    body = (
        "  - id: start\n    type: start\n"
        "  - id: spin\n    type: timer\n    duration: 1m\n    next: spin\n"
        "  - id: done\n    type: end\n"
    )
    problems = errors_of(with_activities(body))
    assert (6, "no 'end' activity is reachable from the start") in problems
    assert (12, "activity 'done' is unreachable from the start") in problems


def test_unreachable_activity() -> None:
    body = (
        "  - id: start\n    type: start\n    next: done\n"
        "  - id: orphan\n    type: service\n    action: log\n    config: {message: x}\n    next: done\n"
        "  - id: done\n    type: end\n"
    )
    assert (9, "activity 'orphan' is unreachable from the start") in errors_of(with_activities(body))


def test_unknown_type_and_action() -> None:
    body = (
        "  - id: start\n    type: start\n"
        "  - id: odd\n    type: teleport\n"
        "  - id: call\n    type: service\n    action: send_fax\n"
        "  - id: done\n    type: end\n"
    )
    reasons = {reason.split(" (")[0]: line for line, reason in errors_of(with_activities(body))}
    assert reasons["activity 'odd' has unknown type 'teleport'"] == 9
    assert reasons["unknown action 'send_fax'"] == 12


@pytest.mark.parametrize("duration", ["5x", "-3m", "soon", "PT"])
def test_bad_durations(duration: str) -> None:
    body = f"  - id: start\n    type: start\n  - id: pause\n    type: timer\n    duration: {duration}\n  - id: done\n    type: end\n"
    [(line, reason)] = errors_of(with_activities(body))
    assert line == 10 and reason.startswith(f"bad duration '{duration}'")


def test_expression_that_does_not_compile() -> None:
    body = "  - id: start\n    type: start\n  - id: pick\n    type: decision\n    condition: ${t} >\n    true_path: done\n    false_path: done\n  - id: done\n    type: end\n"
    [(line, reason)] = errors_of(with_activities(body))
    assert line == 10 and reason.startswith("bad expression")


@pytest.mark.parametrize(
    "escape",
    [
        "open('/etc/passwd').read()",
        "__import__('os').system('id')",
        "().__class__.__bases__[0].__subclasses__()",
    ],
)
def test_expressions_leaving_the_sandbox_are_rejected_at_load(escape: str) -> None:
    body = f'  - id: start\n    type: start\n  - id: pick\n    type: decision\n    condition: "{escape}"\n    true_path: done\n    false_path: done\n  - id: done\n    type: end\n'
    [(line, reason)] = errors_of(with_activities(body))
    assert line == 10 and reason.startswith("bad expression")


def test_trigger_condition_escape_is_rejected() -> None:
    text = GOOD.replace("  topic: t\n", "  topic: t\n  condition: \"__import__('os')\"\n")
    [(line, reason)] = errors_of(text)
    assert line == 5 and reason.startswith("bad expression")


def test_bad_jsonpath() -> None:
    text = GOOD.replace("activities:", "variables:\n  - name: v\n    source: fields[?(\nactivities:")
    [(line, reason)] = errors_of(text)
    assert line == 7 and reason.startswith("bad JSONPath")


def test_variable_needs_exactly_one_of_source_or_value() -> None:
    text = GOOD.replace("activities:", "variables:\n  - name: v\nactivities:")
    [(line, reason)] = errors_of(text)
    assert line == 6 and "exactly one of 'source' or 'value'" in reason


def test_unknown_trigger_type_and_mode() -> None:
    text = GOOD.replace("type: kafka", "type: carrier-pigeon")
    [(line, reason)] = errors_of(text)
    assert line == 3 and "unknown trigger type 'carrier-pigeon'" in reason
    text = GOOD.replace("  topic: t\n", "  topic: t\n  mode: sometimes\n")
    assert errors_of(text)[0][0] == 5


def test_falling_off_the_end_of_the_list() -> None:
    body = "  - id: start\n    type: start\n  - id: done\n    type: end\n  - id: last\n    type: service\n    action: log\n"
    problems = errors_of(with_activities(body.replace("  - id: start\n    type: start\n", "  - id: start\n    type: start\n    next: last\n")))
    assert any("no 'next' and is the last in the list" in reason for _, reason in problems)


def test_many_problems_are_all_reported() -> None:
    body = "  - id: start\n    type: start\n    next: a\n  - id: b\n    type: timer\n    duration: 5x\n"
    assert len(errors_of(with_activities(body))) >= 3


def test_a_broken_file_does_not_stop_the_others(tmp_path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "broken.yaml").write_text("id: [\n")
    (tmp_path / "good.test.yaml").write_text("not: a definition\n")
    result = load_paths([tmp_path], definition_extensions())
    assert list(result.definitions) == ["good"]
    [error] = result.errors
    assert error.file.endswith("broken.yaml") and error.line is not None


def test_duplicate_definition_ids_across_files(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    result = load_paths([tmp_path], definition_extensions())
    [error] = result.errors
    assert "duplicate definition id 'good'" in error.reason and error.file.endswith("b.yaml")
