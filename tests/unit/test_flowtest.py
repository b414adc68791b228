"""Flow tests: the shipped examples pass, failures show expected against actual, bad files name file:line."""

from __future__ import annotations

import textwrap
import time
import xml.etree.ElementTree as ElementTree
from datetime import timedelta
from pathlib import Path

import pytest

from process_engine.domain.errors import DefinitionErrors
from process_engine.flowtest import commands, simulator
from process_engine.flowtest.report import matches
from process_engine.flowtest.spec import format_duration, load_test_file, parse_test_text

PROCESSES = Path(__file__).resolve().parents[2] / "processes"
EXAMPLES = sorted(PROCESSES.glob("*.test.yaml"))

SEED_TEST = """
definition: temperature-control
tests:
  - name: cooling works
    messages:
      - at: 0s
        value: {tags: {device_id: hp-1}, fields: {flow_temp_c: 27.5}}
      - at: 2m
        refresh: {temperature: 22.0}
    expect:
      path: [start, check_temp, activate_cooling, wait_recheck, recheck_temp, PATH_END, end]
      status: STATUS
      actions:
        - {activity: activate_cooling, payload: {device_id: hp-1, command: COMMAND}}
        - {activity: log_success}
"""


def write_case(folder: Path, text: str, name: str = "seed.test.yaml", definition: str = "temperature-control.yaml") -> Path:
    """A test file in `folder` beside a copy of a shipped definition."""
    (folder / definition).write_text((PROCESSES / definition).read_text(encoding="utf-8"), encoding="utf-8")
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def seed_case(**replacements: str) -> str:
    """The seed test with its placeholders filled; defaults make it pass."""
    values = {"PATH_END": "log_success", "STATUS": "completed", "COMMAND": "activate_cooling", **replacements}
    text = SEED_TEST
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def run(paths: list[Path], capsys: pytest.CaptureFixture[str], junit: Path | None = None) -> tuple[int, str, str]:
    code = commands.test_command([str(p) for p in paths], str(junit) if junit else None, None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the shipped examples ------------------------------------------------------------
def test_every_definition_in_processes_has_a_flow_test() -> None:
    definitions = {p.name.removesuffix(".yaml") for p in PROCESSES.glob("*.yaml") if not p.name.endswith(".test.yaml")}
    assert {p.name.removesuffix(".test.yaml") for p in EXAMPLES} == definitions


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_shipped_examples_pass(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([example], capsys)
    assert code == 0, out
    assert "FAIL" not in out and out.count("PASS ") >= 4


def test_the_seed_example_covers_cooling_and_escalation_with_the_five_minute_timer() -> None:
    spec = load_test_file(PROCESSES / "temperature-control.test.yaml")
    paths = [e.value for case in spec.tests for e in case.expectations if e.name == "path"]
    assert any("log_success" in path for path in paths)
    assert any("escalate" in path for path in paths)
    timers = [e.value for case in spec.tests for e in case.expectations if e.name == "timers"]
    assert [{"activity": "wait_recheck", "kind": "timer", "after": "5m"}] in timers


def test_the_whole_folder_runs_in_simulated_time(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    code, out, _ = run([PROCESSES], capsys)
    assert code == 0, out
    assert out.splitlines()[-1].endswith("passed, 0 failed")
    assert time.perf_counter() - started < 10  # timers of minutes cost nothing


# -- failures -------------------------------------------------------------------------
def test_a_broken_expectation_shows_expected_against_actual(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_case(tmp_path, seed_case(PATH_END="escalate", STATUS="running", COMMAND="cool"))
    code, out, _ = run([path], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{path}: temperature-control from {tmp_path / 'temperature-control.yaml'}"
    assert lines[1] == "FAIL temperature-control: cooling works"
    assert "    - escalate" in lines and "    + log_success" in lines
    assert "      expected: running" in lines and "      actual:   completed" in lines
    # an action that differs is told by the field that differs, not as two whole lines
    [field] = [line for line in lines if line.startswith("    actions[1] (activity activate_cooling) payload.command")]
    assert lines[lines.index(field) + 1:lines.index(field) + 3] == ["      expected: cool", "      actual:   activate_cooling"]
    assert lines[-1] == "0 passed, 1 failed"


def test_a_passing_and_a_failing_test_each_get_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, seed_case(), name="good.test.yaml")
    write_case(tmp_path, seed_case(STATUS="failed"), name="wrong.test.yaml")
    code, out, _ = run([tmp_path], capsys)
    assert code == 1
    assert [line for line in out.splitlines() if not line.startswith((" ", str(tmp_path)))] == [
        "PASS temperature-control: cooling works",
        "FAIL temperature-control: cooling works",
        "1 passed, 1 failed",
    ]


def test_junit_report_is_valid_xml_with_the_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, seed_case(), name="good.test.yaml")
    write_case(tmp_path, seed_case(PATH_END="escalate"), name="wrong.test.yaml")
    (tmp_path / "broken.test.yaml").write_text("definition: temperature-control\ntests: [\n", encoding="utf-8")
    report = tmp_path / "reports" / "junit.xml"
    code, _, _ = run([tmp_path], capsys, junit=report)
    assert code == 1
    root = ElementTree.parse(report).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures")) == ("3", "2")
    failures = root.findall(".//testcase/failure")
    assert len(failures) == 2
    expectation = next(f for f in failures if f.get("type") == "expectation")
    assert "- escalate" in expectation.text and "+ log_success" in expectation.text
    malformed = next(f for f in failures if f.get("type") == "malformed")
    assert "broken.test.yaml:3: malformed YAML" in malformed.get("message")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("definition: temperature-control\ntests:\n  - name: x\n    messages: [{value: {}}\n", 5, "malformed YAML"),
        ("definition: temperature-control\ntests:\n  - name: x\n    messages: [{value: {}}]\n    expect: {instancs: 1}\n", 5, "unknown key 'instancs'"),
        ("definition: temperature-control\ntests:\n  - name: x\n    messages:\n      - at: soon\n        value: {}\n    expect: {instances: 1}\n", 5, "duration 'soon'"),
        ("definition: temperature-control\ntests:\n  - name: x\n    messages: [{value: {}}]\n    expect: {status: done}\n", 5, "unknown status 'done'"),
        ("definition: temperature-control\ntests:\n  - name: x\n    messages: [{at: 2m, value: {}}, {at: 1m, value: {}}]\n    expect: {instances: 1}\n", 4, "earlier than the message before it"),
        ("definition: temperature-control\ntests:\n  - name: x\n    messages: [{value: {}}]\n    actions: {activate_cooling: maybe}\n    expect: {instances: 1}\n", 5, "stub 'maybe'"),
        ("definition: temperature-control\ntests: []\n", 2, "non-empty list"),
        ("- just a list\n", 1, "must be a mapping"),
    ],
)
def test_a_malformed_test_file_fails_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, reason: str) -> None:
    path = write_case(tmp_path, text, name="bad.test.yaml")
    code, out, err = run([path], capsys)
    assert code == 1 and "Traceback" not in out + err
    assert out.splitlines()[0] == f"FAIL {path}"
    assert any(f"{path}:{line}: " in row and reason in row for row in out.splitlines()), out


def test_a_missing_definition_fails_with_the_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.test.yaml"
    path.write_text("# a comment\ndefinition: nowhere\ntests:\n  - {name: a, messages: [{value: {}}], expect: {instances: 0}}\n", encoding="utf-8")
    code, out, _ = run([path], capsys)
    assert code == 1
    assert f"{path}:2: definition 'nowhere' not found" in out


def test_definitions_are_also_looked_up_in_the_definitions_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "seed.test.yaml").write_text(seed_case(), encoding="utf-8")
    assert commands.test_command([str(tests)], None, str(PROCESSES)) == 0
    assert "PASS temperature-control: cooling works" in capsys.readouterr().out


def test_a_stub_naming_nothing_is_reported_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = seed_case() + "    actions:\n      activate_colling: fail\n"
    path = write_case(tmp_path, text)
    code, out, _ = run([path], capsys)
    assert code == 1
    assert f"{path}:17: action stub 'activate_colling' names no service activity" in out


def test_no_test_files_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([tmp_path], capsys)
    assert code == 1 and "no flow tests" in err
    code, _, err = run([tmp_path / "missing"], capsys)
    assert code == 1 and "no such file or folder" in err


# -- simulated time and stubs -------------------------------------------------------------
SLOW = """
id: slow
trigger: {type: api}
variables:
  - {name: device, value: d-1}
activities:
  - {id: start, type: start}
  - {id: wait_a_day, type: timer, duration: 1d}
  - {id: call, type: service, action: http, config: {method: POST, url: "http://x/${device}"}, retry: {max_attempts: 3, backoff: 1m}, on_error: gave_up}
  - {id: done, type: end}
  - {id: gave_up, type: end}
"""


def slow_case(stub: str, run_for: str = "") -> str:
    return f"""
definition: slow
tests:
  - name: slow
    messages:
      - start: {{device: d-9}}
    {run_for}
    actions: {{call: {stub}}}
    expect:
      status: STATUS
      path: PATH
      actions: ACTIONS
"""


@pytest.mark.parametrize(
    ("stub", "path", "attempts"),
    [
        ("succeed", "[start, wait_a_day, call, done]", ["succeeded"]),
        ("{fail: 2}", "[start, wait_a_day, call, done]", ["failed", "failed", "succeeded"]),
        ("fail", "[start, wait_a_day, call, gave_up]", ["failed", "failed", "failed"]),
    ],
)
def test_a_day_long_timer_and_retries_cost_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], stub: str, path: str, attempts: list[str]) -> None:
    (tmp_path / "slow.yaml").write_text(SLOW, encoding="utf-8")
    actions = "[" + ", ".join(f"{{url: 'http://x/d-9', attempt: {n}, outcome: {o}}}" for n, o in enumerate(attempts, 1)) + "]"
    text = slow_case(stub).replace("STATUS", "completed").replace("PATH", path).replace("ACTIONS", actions)
    (tmp_path / "slow.test.yaml").write_text(text, encoding="utf-8")
    code, out, _ = run([tmp_path], capsys)
    assert code == 0, out


def test_run_for_stops_simulated_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "slow.yaml").write_text(SLOW, encoding="utf-8")
    text = slow_case("succeed", run_for="run_for: 23h").replace("STATUS", "running").replace("PATH", "[start]").replace("ACTIONS", "[]")
    (tmp_path / "slow.test.yaml").write_text(text + "      current_activity: wait_a_day\n      timers: [{activity: wait_a_day, after: 1d}]\n", encoding="utf-8")
    code, out, _ = run([tmp_path], capsys)
    assert code == 0, out


LOOP = """
id: loop
trigger: {type: api}
variables:
  - {name: never, value: false}
activities:
  - {id: start, type: start}
  - {id: tick, type: timer, duration: 1m}
  - {id: again, type: decision, condition: "${never}", true_path: done, false_path: tick}
  - {id: done, type: end}
"""


def test_a_timer_loop_fails_the_test_instead_of_hanging(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulator, "MAX_TIMER_FIRINGS", 50)
    (tmp_path / "loop.yaml").write_text(LOOP, encoding="utf-8")
    (tmp_path / "loop.test.yaml").write_text(
        "definition: loop\ntests:\n"
        "  - {name: forever, messages: [{start: {}}], expect: {status: running}}\n"
        "  - {name: half an hour, messages: [{start: {}}], run_for: 30m, expect: {status: running, current_activity: tick}}\n",
        encoding="utf-8",
    )
    code, out, _ = run([tmp_path], capsys)
    assert code == 1
    assert f"{tmp_path / 'loop.test.yaml'}:3: more than 50 timers fired in a row" in out
    assert "PASS loop: half an hour" in out


def test_stub_semantics_are_read_from_the_file() -> None:
    spec = parse_test_text(
        "definition: d\ntests:\n  - name: t\n    messages: [{value: {}}]\n"
        "    actions: {a: succeed, b: fail, c: {fail: 2, error: down}, d: {result: 7}}\n    expect: {instances: 1}\n",
        "t.test.yaml",
    )
    stubs = spec.tests[0].stubs
    assert [stubs["a"].fails(n) for n in (1, 2)] == [False, False]
    assert [stubs["b"].fails(n) for n in (1, 9)] == [True, True]
    assert [stubs["c"].fails(n) for n in (1, 2, 3)] == [True, True, False] and stubs["c"].error == "down"
    assert stubs["d"].result == 7 and not stubs["d"].fails(1)


def test_parse_errors_are_collected_with_lines() -> None:
    with pytest.raises(DefinitionErrors) as caught:
        parse_test_text("definition: 3\ntests:\n  - messages: [{value: {}, start: {}}]\n    expect: {timers: [{kind: tick}]}\n", "t.test.yaml")
    found = [(e.line, e.reason.split(" ")[0]) for e in caught.value.errors]
    assert found == [(1, "'definition'"), (3, "a"), (3, "a"), (4, "unknown")]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (300, "5m"), (90, "1m30s"), (86_400 + 3_600, "1d1h"), (1.5, "1.5s"), (0.25, "0.25s")],
)
def test_durations_print_the_way_users_write_them(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


def test_mappings_match_on_the_keys_given() -> None:
    actual = {"topic": "t", "payload": {"a": 1, "b": 2}, "qos": 1}
    assert matches(actual, {"payload": {"a": 1}})
    assert matches(actual, {"payload": {"a": 1.0}})
    assert not matches(actual, {"payload": {"c": 1}})
    assert not matches({"retain": 1}, {"retain": True})
    assert matches([1, {"x": 1, "y": 2}], [1, {"x": 1}]) and not matches([1, 2], [1])
