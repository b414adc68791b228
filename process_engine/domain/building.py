"""Turn a parsed YAML document into a validated, compiled ProcessDefinition.

The YAML adapter hands over plain data plus a source map (path -> line); every
problem found becomes a DefinitionError naming the file, the line and the reason.
All problems are collected, not just the first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from process_engine.domain.activity_fields import FIELD_READERS
from process_engine.domain.definition import (
    INSTANCE_MODES,
    TRIGGER_TYPES,
    Activity,
    ProcessDefinition,
    Trigger,
    Variable,
)
from process_engine.domain.durations import parse_duration
from process_engine.domain.errors import DefinitionError, DefinitionErrors, ExpressionError
from process_engine.domain.expressions import Expression, compile_expression
from process_engine.domain.extensions import Extensions
from process_engine.domain.graph import check_graph
from process_engine.domain.jsonpaths import JsonPath, compile_jsonpath
from process_engine.domain.name_checks import check_names, suggestion
from process_engine.domain.templates import Encoder, Template, compile_config, compile_template
from process_engine.domain.trigger_rules import check_keys, read_rules
from process_engine.domain.windows import read_window

BUILT_IN_TYPES = frozenset(
    {"start", "end", "decision", "service", "timer", "wait", "set", "parallel", "join", "compensate"}
)
MAX_ACTIVITIES = 1000
Path = tuple[Any, ...]


class _Builder:
    """Collects errors while compiling one document."""

    def __init__(self, lines: Mapping[Path, int], file: str | None, extensions: Extensions):
        self.lines = lines
        self.file = file
        self.extensions = extensions
        self.errors: list[DefinitionError] = []
        self.unknown_types = False

    def fail(self, path: Path, reason: str) -> None:
        """Record a problem at the nearest known line of `path`."""
        self.errors.append(DefinitionError(reason, self.file, self.line_of(path)))

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its closest parent that has one."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return line
        return None

    def expression(self, path: Path, text: Any) -> Expression | None:
        """Compile an expression, recording failure."""
        if not isinstance(text, (str, int, float, bool)):
            self.fail(path, f"expected an expression, got {type(text).__name__}")
            return None
        try:
            return compile_expression(str(text))
        except ExpressionError as error:
            self.fail(path, f"bad expression: {error}")
            return None

    def jsonpath(self, path: Path, text: Any) -> JsonPath | None:
        """Compile a JSONPath, recording failure."""
        if not isinstance(text, str) or not text.strip():
            self.fail(path, "expected a JSONPath string such as tags.device_id")
            return None
        try:
            return compile_jsonpath(text)
        except ExpressionError as error:
            self.fail(path, f"bad JSONPath {text!r}: {error}")
            return None

    def duration(self, path: Path, text: Any) -> timedelta | None:
        """Parse a duration, recording failure."""
        try:
            return parse_duration(text)
        except (ValueError, TypeError) as error:
            self.fail(path, f"bad duration {text!r}: {error}")
            return None

    def template(self, path: Path, value: Any, encoders: Mapping[str, Encoder] | None = None) -> Template | None:
        """Compile a config template (with `encoders` for some keys' values), recording failure."""
        try:
            return compile_config(value, encoders) if encoders else compile_template(value)
        except ExpressionError as error:
            self.fail(path, f"bad template: {error}")
            return None

    def text(self, mapping: Mapping[str, Any], key: str, path: Path, required: bool = True) -> str | None:
        """A non-empty string field."""
        value = mapping.get(key)
        if value is None:
            if required:
                self.fail(path, f"missing '{key}'")
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
            self.fail(path + (key,), f"'{key}' must be a non-empty string")
            return None
        return str(value)


def build_definition(
    document: Any,
    lines: Mapping[Path, int] | None = None,
    file: str | None = None,
    extensions: Extensions | None = None,
) -> ProcessDefinition:
    """Validate and compile one definition document.

    Raises:
        DefinitionErrors: every problem found, each with file, line and reason.
    """
    builder = _Builder(lines or {}, file, extensions or Extensions())
    definition = _build(builder, document)
    if builder.errors or definition is None:
        raise DefinitionErrors(builder.errors or [DefinitionError("invalid definition", file)])
    return definition


def content_hash(document: Any) -> str:
    """A stable hash of a definition's content: a changed file is a new version."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _build(builder: _Builder, document: Any) -> ProcessDefinition | None:
    if not isinstance(document, Mapping):
        builder.fail((), "a definition must be a mapping with id, trigger and activities")
        return None
    known = {"id", "name", "version", "description", "trigger", "variables", "activities"}
    for key in document:
        if key not in known:
            builder.fail((key,), f"unknown top-level key '{key}'{suggestion(str(key), known)} (expected one of {sorted(known)})")
    definition_id = builder.text(document, "id", ())
    name = builder.text(document, "name", (), required=False) or definition_id or ""
    version = _version(builder, document.get("version"))
    trigger = _trigger(builder, document.get("trigger"))
    variables = _variables(builder, document.get("variables") or [])
    activities = _activities(builder, document.get("activities"))
    # With an activity left out for its unknown type, the graph would only repeat that error.
    start = check_graph(activities, builder.fail) if activities and not builder.unknown_types else None
    if not definition_id or trigger is None or start is None or builder.errors:
        return None
    definition = ProcessDefinition(
        id=definition_id,
        name=name,
        version=version,
        trigger=trigger,
        variables=variables,
        activities=activities,
        start_activity=start,
        content_hash=content_hash(document),
        source_file=builder.file,
        raw=dict(document),
        windowed=any(v.window is not None for v in variables),
    )
    if definition.windowed and not trigger.is_topic:
        builder.fail(("trigger", "type"), "a variable with a 'window' needs a kafka/redpanda trigger: it aggregates messages per key")
    check_names(definition, builder.fail)  # on a sound graph only: no follow-on errors
    return None if builder.errors else definition


def _version(builder: _Builder, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        builder.fail(("version",), "'version' must be a positive integer (or left out)")
        return 0
    return value


def _trigger(builder: _Builder, raw: Any) -> Trigger | None:
    path: Path = ("trigger",)
    if not isinstance(raw, Mapping):
        builder.fail(path, "missing 'trigger' mapping (type: kafka|redpanda|schedule|api)")
        return None
    kind = raw.get("type")
    if kind not in TRIGGER_TYPES:
        builder.fail(path + ("type",), f"unknown trigger type {kind!r} (expected one of {list(TRIGGER_TYPES)})")
        return None
    check_keys(builder, raw, path)
    topic = builder.text(raw, "topic", path, required=kind in ("redpanda", "kafka"))
    cron = builder.text(raw, "cron", path, required=kind == "schedule")
    condition = builder.expression(path + ("condition",), raw["condition"]) if raw.get("condition") else None
    correlate = builder.jsonpath(path + ("correlate",), raw["correlate"]) if raw.get("correlate") else None
    mode = raw.get("mode") or "single"
    if mode not in INSTANCE_MODES:
        builder.fail(path + ("mode",), f"unknown mode {mode!r} (expected one of {list(INSTANCE_MODES)})")
    if cron is not None and len(cron.split()) != 5:
        builder.fail(path + ("cron",), f"bad cron {cron!r}: expected 5 fields (minute hour day month weekday)")
    rules = read_rules(builder, raw, path, is_topic=kind in ("redpanda", "kafka"))
    return Trigger(type=kind, topic=topic, condition=condition, correlate=correlate, mode=mode, cron=cron, **rules)


def _variables(builder: _Builder, raw: Any) -> tuple[Variable, ...]:
    if not isinstance(raw, list):
        builder.fail(("variables",), "'variables' must be a list of {name, source|value}")
        return ()
    seen: set[str] = set()
    result = []
    for index, item in enumerate(raw):
        path: Path = ("variables", index)
        if not isinstance(item, Mapping):
            builder.fail(path, "a variable must be a mapping with 'name' and 'source' or 'value'")
            continue
        name = builder.text(item, "name", path)
        if name is None:
            continue
        if not name.isidentifier():
            builder.fail(path + ("name",), f"variable name {name!r} must be an identifier (letters, digits, _)")
        if name in seen:
            builder.fail(path + ("name",), f"duplicate variable '{name}'")
        seen.add(name)
        has_source, has_value = "source" in item, "value" in item
        if has_source == has_value:
            builder.fail(path, f"variable '{name}' needs exactly one of 'source' or 'value'")
            continue
        source = builder.jsonpath(path + ("source",), item["source"]) if has_source else None
        window = read_window(builder, item["window"], path + ("window",), has_source) if item.get("window") is not None else None
        result.append(Variable(name=name, source=source, value=item.get("value"), line=builder.line_of(path), window=window))
    return tuple(result)


def _activities(builder: _Builder, raw: Any) -> dict[str, Activity]:
    if not isinstance(raw, list) or not raw:
        builder.fail(("activities",), "'activities' must be a non-empty list")
        return {}
    if len(raw) > MAX_ACTIVITIES:
        builder.fail(("activities",), f"{len(raw):,} activities: a definition may have at most {MAX_ACTIVITIES:,}; split it into several")
        return {}
    ids = [item.get("id") if isinstance(item, Mapping) else None for item in raw]
    activities: dict[str, Activity] = {}
    for index, item in enumerate(raw):
        path: Path = ("activities", index)
        if not isinstance(item, Mapping):
            builder.fail(path, "an activity must be a mapping with 'id' and 'type'")
            continue
        activity_id = builder.text(item, "id", path)
        if activity_id is None:
            continue
        if activity_id in activities:
            builder.fail(path + ("id",), f"duplicate activity id '{activity_id}'")
            continue
        following = ids[index + 1] if index + 1 < len(ids) else None
        activity = _activity(builder, item, path, activity_id, following)
        if activity is not None:
            activities[activity_id] = activity
    return activities


def _activity(
    builder: _Builder, item: Mapping[str, Any], path: Path, activity_id: str, following: Any
) -> Activity | None:
    kind = item.get("type")
    custom = builder.extensions.activity_types.get(kind) if isinstance(kind, str) else None
    if kind not in BUILT_IN_TYPES and custom is None:
        known = sorted(BUILT_IN_TYPES | set(builder.extensions.activity_types))
        hint = suggestion(kind, known) if isinstance(kind, str) else ""
        builder.fail(path + ("type",), f"activity '{activity_id}' has unknown type {kind!r}{hint} (expected one of {known})")
        builder.unknown_types = True
        return None
    explicit_next = builder.text(item, "next", path, required=False)
    # The implicit-next rule: no `next` continues with the activity listed after it.
    implicit = following if isinstance(following, str) else None
    next_id = explicit_next or (None if kind in ("end", "decision", "parallel") else implicit)
    fields: dict[str, Any] = {"id": activity_id, "type": kind, "next": next_id, "line": builder.line_of(path)}
    reader = FIELD_READERS.get(kind)
    if reader is not None:
        fields.update(reader(builder, item, path, activity_id))
    else:
        fields.update(_custom_fields(builder, item, path, custom))
    if kind not in ("end", "decision", "parallel") and not next_id:
        builder.fail(path, f"activity '{activity_id}' has no 'next' and is the last in the list; end the flow with an 'end' activity")
    return Activity(**fields)


def _custom_fields(builder: _Builder, item: Mapping[str, Any], path: Path, custom: Any) -> dict[str, Any]:
    options = {k: v for k, v in item.items() if k not in ("id", "type", "next")}
    check = getattr(custom, "validate", None)
    for problem in (check(options) if check else []):
        builder.fail(path, problem)
    return {"options": options, "handler": custom}
