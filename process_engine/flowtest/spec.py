"""Flow test files (`*.test.yaml`): what they may say, and reading them with line numbers.

A flow test file sits beside the definition it tests and is run by
`process-engine test [PATH...]`. Time is simulated: a `5m` timer costs nothing.

The format, every key with a complete example, is in the README ("Flow tests").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from process_engine.adapters.definitions.yaml_loader import parse_yaml
from process_engine.domain.durations import parse_duration
from process_engine.domain.errors import DefinitionError, DefinitionErrors
from process_engine.domain.instance import STATUSES

DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
TIMER_KINDS = ("timer", "wait_timeout", "retry")
FILE_KEYS = {"definition", "tests"}
TEST_KEYS = {"name", "start_at", "messages", "actions", "run_for", "expect"}
MESSAGE_KEYS = {"at", "topic", "key", "value", "partition", "refresh", "start", "cancel", "instance"}
STUB_KEYS = {"fail", "error", "result"}
TIMER_KEYS = {"instance", "activity", "kind", "after"}
EXPECT_KEYS = ("instances", "path", "status", "current_activity", "variables", "actions", "timers", "dead_letters")

YamlPath = tuple[Any, ...]


@dataclass(frozen=True)
class Arrival:
    """One entry of `messages`: a message, a by-hand start or a variable refresh."""

    kind: str  # "message", "start" or "refresh"
    at: timedelta
    line: int | None
    topic: str | None = None
    value: Any = None
    partition: int = 0
    key: str | None = None  # the Kafka message key: the correlation key without `correlate`
    variables: dict[str, Any] = field(default_factory=dict)
    instance: int | None = None  # refresh only this instance (1-based)


@dataclass(frozen=True)
class ActionStub:
    """How a stubbed action answers: attempts up to `fail_attempts` fail (None: every one)."""

    fail_attempts: int | None = 0
    error: str = "stubbed failure"
    result: Any = None
    line: int | None = None

    def fails(self, attempt: int) -> bool:
        """True when this attempt (1-based) is to fail."""
        return self.fail_attempts is None or attempt <= self.fail_attempts


@dataclass(frozen=True)
class Expectation:
    """One `expect` entry, with the line it was written on."""

    name: str
    value: Any
    line: int | None


@dataclass(frozen=True)
class FlowTest:
    """One test case of a flow test file."""

    name: str
    line: int | None
    start_at: datetime
    arrivals: tuple[Arrival, ...]
    stubs: Mapping[str, ActionStub]
    run_for: timedelta | None
    expectations: tuple[Expectation, ...]


@dataclass(frozen=True)
class FlowTestFile:
    """A parsed `*.test.yaml` file."""

    path: str
    definition_id: str
    definition_line: int | None
    tests: tuple[FlowTest, ...]


def format_duration(value: timedelta) -> str:
    """`5m`, `1h30m`, `1.5s`: the short form users write, to the millisecond."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    if millis:
        parts.append(f"{millis / 1000:g}s")
    return "".join(parts)


def load_test_file(path: Path) -> FlowTestFile:
    """Read and check one flow test file.

    Raises:
        DefinitionErrors: every problem found, each with file and line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DefinitionErrors([DefinitionError(f"cannot read file: {error}", str(path))]) from None
    return parse_test_text(text, str(path))


def parse_test_text(text: str, file: str) -> FlowTestFile:
    """Parse flow test YAML; see the module docstring for the format.

    Raises:
        DefinitionErrors: every problem found, each with file and line.
    """
    document, lines = parse_yaml(text, file)
    reader = _Reader(file, lines)
    parsed = reader.file(document)
    if reader.errors or parsed is None:
        reader.errors.sort(key=lambda error: error.line or 0)
        raise DefinitionErrors(reader.errors or [DefinitionError("empty flow test file", file, 1)])
    return parsed


class _Reader:
    """Checks a parsed document, collecting every problem with its line."""

    def __init__(self, file: str, lines: Mapping[YamlPath, int]):
        self.path = file
        self.lines = lines
        self.errors: list[DefinitionError] = []

    def fail(self, path: YamlPath, reason: str) -> None:
        """Record a problem at the nearest known line of `path`."""
        self.errors.append(DefinitionError(reason, self.path, self.line(path)))

    def line(self, path: YamlPath) -> int | None:
        """The line of `path`, or of its closest parent that has one."""
        for cut in range(len(path), -1, -1):
            found = self.lines.get(tuple(path[:cut]))
            if found is not None:
                return found
        return None

    def mapping(self, path: YamlPath, value: Any, allowed: set[str], what: str) -> dict[str, Any] | None:
        """A mapping with only `allowed` keys (unknown keys are reported: usually typos)."""
        if not isinstance(value, dict):
            self.fail(path, f"{what} must be a mapping, not {_kind(value)}")
            return None
        for key in value:
            if key not in allowed:
                self.fail(path + (key,), f"unknown key '{key}' in {what} (expected one of: {', '.join(sorted(allowed))})")
        return value

    def duration(self, path: YamlPath, value: Any) -> timedelta | None:
        """A duration such as 30s, 5m or PT5M."""
        try:
            return parse_duration(value)
        except ValueError as error:
            self.fail(path, str(error))
            return None

    def file(self, document: Any) -> FlowTestFile | None:
        """The whole file."""
        top = self.mapping((), document, FILE_KEYS, "a flow test file")
        if top is None:
            return None
        definition = top.get("definition")
        if not isinstance(definition, str) or not definition:
            self.fail(("definition",), "'definition' must name the id of the definition under test")
        tests = top.get("tests")
        if not isinstance(tests, list) or not tests:
            self.fail(("tests",), "'tests' must be a non-empty list of test cases")
            tests = []
        cases = [self.test(("tests", index), case) for index, case in enumerate(tests)]
        self._unique_names(cases)
        return FlowTestFile(self.path, str(definition), self.line(("definition",)), tuple(c for c in cases if c))

    def _unique_names(self, cases: list[FlowTest | None]) -> None:
        seen: set[str] = set()
        for case in cases:
            if case is not None and case.name in seen:
                self.errors.append(DefinitionError(f"duplicate test name '{case.name}'", self.path, case.line))
            if case is not None:
                seen.add(case.name)

    def test(self, path: YamlPath, value: Any) -> FlowTest | None:
        """One test case."""
        case = self.mapping(path, value, TEST_KEYS, "a test case")
        if case is None:
            return None
        name = case.get("name")
        if not isinstance(name, str) or not name.strip():
            self.fail(path, "a test case needs a 'name'")
            name = f"test {path[-1] + 1}"
        run_for = self.duration(path + ("run_for",), case["run_for"]) if "run_for" in case else None
        return FlowTest(
            name=name,
            line=self.line(path),
            start_at=self.start_at(path + ("start_at",), case.get("start_at")),
            arrivals=tuple(self.arrivals(path + ("messages",), case.get("messages"))),
            stubs=self.stubs(path + ("actions",), case.get("actions") or {}),
            run_for=run_for,
            expectations=tuple(self.expectations(path + ("expect",), case.get("expect"))),
        )

    def start_at(self, path: YamlPath, value: Any) -> datetime:
        """The simulated clock at `at: 0s`."""
        if value is None:
            return DEFAULT_START
        try:
            # ruamel hands over its own datetime/date subclasses; the ISO text round trip drops them
            text = value.isoformat() if isinstance(value, (datetime, date)) else str(value)
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(path, f"start_at {value!r} is not an ISO-8601 timestamp (e.g. 2026-01-05T08:00:00Z)")
            return DEFAULT_START
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

    def arrivals(self, path: YamlPath, value: Any) -> list[Arrival]:
        """The `messages` list; offsets must not go backwards."""
        if not isinstance(value, list) or not value:
            self.fail(path, "'messages' must be a non-empty list (each with at least 'value', 'start' or 'refresh')")
            return []
        arrivals: list[Arrival] = []
        for index, item in enumerate(value):
            arrival = self.arrival(path + (index,), item, arrivals[-1].at if arrivals else timedelta(0))
            if arrival is not None:
                arrivals.append(arrival)
        return arrivals

    def arrival(self, path: YamlPath, value: Any, previous: timedelta) -> Arrival | None:
        """One entry of `messages`."""
        item = self.mapping(path, value, MESSAGE_KEYS, "a message")
        if item is None:
            return None
        at = self.duration(path + ("at",), item["at"]) if "at" in item else previous
        if at is not None and at < previous:
            self.fail(path + ("at",), f"'at: {item['at']}' is earlier than the message before it ({format_duration(previous)})")
        kinds = [kind for kind in ("value", "start", "refresh", "cancel") if kind in item]
        if len(kinds) != 1:
            self.fail(path, "a message needs exactly one of 'value' (a message), 'start' (variables), "
                            "'refresh' (variables) or 'cancel' (an instance number)")
            return None
        kind = kinds[0]
        if kind == "cancel":
            if not _positive(item["cancel"]):
                self.fail(path + ("cancel",), "'cancel' is the number of the instance to cancel, from 1")
                return None
            return Arrival("cancel", at or previous, self.line(path), instance=item["cancel"])
        for key in ("topic", "partition") if kind != "value" else ():
            if key in item:
                self.fail(path + (key,), f"'{key}' goes with 'value', not with '{kind}'")
        if "instance" in item and (kind != "refresh" or not _positive(item["instance"])):
            self.fail(path + ("instance",), "'instance' goes with 'refresh' and is an instance number from 1")
        if kind == "value":
            return self._message(path, item, at or previous)
        if not isinstance(item[kind], dict):
            self.fail(path + (kind,), f"'{kind}' must be a mapping of variable names to values")
            return None
        return Arrival(kind, at or previous, self.line(path), variables=item[kind], instance=item.get("instance"))

    def _message(self, path: YamlPath, item: dict[str, Any], at: timedelta) -> Arrival:
        topic, partition = item.get("topic"), item.get("partition", 0)
        if topic is not None and not isinstance(topic, str):
            self.fail(path + ("topic",), "'topic' must be text")
        if not _whole(partition):
            self.fail(path + ("partition",), "'partition' must be a whole number, 0 or more")
            partition = 0
        key = item.get("key")
        if key is not None and not isinstance(key, str):
            self.fail(path + ("key",), "'key' must be text")
            key = None
        return Arrival("message", at, self.line(path), topic=topic, value=item["value"], partition=partition, key=key)

    def stubs(self, path: YamlPath, value: Any) -> dict[str, ActionStub]:
        """The `actions` stubs by activity id or action name."""
        if not isinstance(value, dict):
            self.fail(path, "'actions' must map activity ids or action names to succeed, fail, {fail: N} or {result: ...}")
            return {}
        stubs = {}
        for name, spec in value.items():
            stub = self.stub(path + (name,), spec)
            if stub is not None:
                stubs[str(name)] = stub
        return stubs

    def stub(self, path: YamlPath, value: Any) -> ActionStub | None:
        """One stub: `succeed`, `fail`, `{fail: N}`, `{fail: N, error: text}` or `{result: value}`."""
        line = self.line(path)
        if value == "succeed":
            return ActionStub(0, line=line)
        if value == "fail":
            return ActionStub(None, line=line)
        if not isinstance(value, dict):
            self.fail(path, f"stub {value!r} is not one of: succeed, fail, {{fail: N}}, {{result: ...}}")
            return None
        spec = self.mapping(path, value, STUB_KEYS, "an action stub") or {}
        fail = spec.get("fail", 0)
        if not _whole(fail):
            self.fail(path + ("fail",), "'fail' must be how many attempts fail (a whole number, 0 or more)")
            fail = 0
        return ActionStub(fail, str(spec.get("error", "stubbed failure")), spec.get("result"), line)

    def expectations(self, path: YamlPath, value: Any) -> list[Expectation]:
        """The `expect` block, each entry checked for its shape."""
        expect = self.mapping(path, value, set(EXPECT_KEYS), "'expect'") if value is not None else None
        if not expect:
            self.fail(path, "a test case needs an 'expect' block with at least one of: " + ", ".join(EXPECT_KEYS))
            return []
        found = []
        for name in EXPECT_KEYS:
            if name in expect:
                checked = _CHECKS[name](self, path + (name,), expect[name])
                found.append(Expectation(name, checked, self.line(path + (name,))))
        return sorted(found, key=lambda e: e.line or 0)  # report in the order the file reads

    def count(self, path: YamlPath, value: Any) -> Any:
        """A whole number, 0 or more."""
        if not _whole(value):
            self.fail(path, f"expected a whole number, 0 or more, not {value!r}")
        return value

    def path_list(self, path: YamlPath, value: Any) -> Any:
        """A list of activity ids, or a list of such lists (one per instance)."""
        if isinstance(value, list) and value and all(isinstance(item, list) for item in value):
            for index, item in enumerate(value):
                self.path_list(path + (index,), item)
        elif not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(path, "'path' must list activity ids, or hold one such list per instance")
        return value

    def status(self, path: YamlPath, value: Any) -> Any:
        """A status, or a list of statuses (one per instance)."""
        for item in value if isinstance(value, list) else [value]:
            if item not in STATUSES:
                self.fail(path, f"unknown status {item!r} (expected one of: {', '.join(STATUSES)})")
        return value

    def current(self, path: YamlPath, value: Any) -> Any:
        """An activity id or null, or a list of those (one per instance)."""
        for item in value if isinstance(value, list) else [value]:
            if item is not None and not isinstance(item, str):
                self.fail(path, "'current_activity' must be an activity id or null (or one per instance)")
        return value

    def variables(self, path: YamlPath, value: Any) -> Any:
        """A mapping, or a list of mappings (one per instance)."""
        if not isinstance(value, dict) and not (isinstance(value, list) and all(isinstance(i, dict) for i in value)):
            self.fail(path, "'variables' must be a mapping of names to values (or one mapping per instance)")
        return value

    def actions(self, path: YamlPath, value: Any) -> Any:
        """A list of mappings, subset-matched against the requested actions."""
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.fail(path, "'actions' must be a list of mappings such as {activity: x, action: mqtt_publish}")
        return value

    def timers(self, path: YamlPath, value: Any) -> Any:
        """A list of timer mappings; `after` is read as a duration and shown in short form."""
        if not isinstance(value, list):
            self.fail(path, "'timers' must be a list of mappings such as {activity: wait_recheck, after: 5m}")
            return value
        timers = []
        for index, item in enumerate(value):
            entry = dict(self.mapping(path + (index,), item, TIMER_KEYS, "a timer") or {})
            if "after" in entry:
                after = self.duration(path + (index, "after"), entry["after"])
                entry["after"] = format_duration(after) if after is not None else entry["after"]
            if "kind" in entry and entry["kind"] not in TIMER_KINDS:
                self.fail(path + (index, "kind"), f"unknown timer kind {entry['kind']!r} (expected one of: {', '.join(TIMER_KINDS)})")
            timers.append(entry)
        return timers


_CHECKS = {
    "instances": _Reader.count,
    "dead_letters": _Reader.count,
    "path": _Reader.path_list,
    "status": _Reader.status,
    "current_activity": _Reader.current,
    "variables": _Reader.variables,
    "actions": _Reader.actions,
    "timers": _Reader.timers,
}


def _whole(value: Any) -> bool:
    """A whole number, 0 or more (YAML's true is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive(value: Any) -> bool:
    return _whole(value) and value >= 1


def _kind(value: Any) -> str:
    """How a YAML value reads to a user."""
    if value is None:
        return "empty"
    return {dict: "a mapping", list: "a list", str: "text"}.get(type(value), type(value).__name__)
