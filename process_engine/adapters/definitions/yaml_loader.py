"""Read definition files with ruamel.yaml, keeping line numbers for every error.

A definition file is untrusted input: it may be at most 1 MiB, and YAML aliases,
anchors and explicit tags are refused while the document is composed, before
anything is expanded or constructed (no billion laughs, no `!!python/...`). Any
failure at all while one file loads is that file's error, never the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from process_engine.domain.building import build_definition
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.errors import DefinitionError, DefinitionErrors
from process_engine.domain.extensions import Extensions

TEST_SUFFIX = ".test.yaml"
DEFINITION_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 64  # keeps every recursive step after parsing (plain data, hashing) shallow


@dataclass
class LoadResult:
    """Definitions that loaded, by id, and the errors of those that did not."""

    definitions: dict[str, ProcessDefinition] = field(default_factory=dict)
    errors: list[DefinitionError] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # definition id -> file


class _Refused(ComposerError):
    """Well-formed YAML using a feature definitions may not use."""


class _StrictComposer(Composer):
    """ruamel's composer, refusing aliases, anchors, explicit tags and deep nesting where they appear."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        problem = _refusal(event, self.depth)
        if problem:
            raise _Refused(None, None, problem, event.start_mark)
        return super().compose_node(parent, index)


def _refusal(event: Any, depth: int) -> str | None:
    if isinstance(event, AliasEvent):
        return f"YAML aliases (*{event.anchor}) are not allowed: write the value out"
    if event.anchor is not None:
        return f"YAML anchors (&{event.anchor}) are not allowed: write the value out"
    tag = getattr(event, "ctag", None)
    if tag is not None:
        shown = str(tag).replace("tag:yaml.org,2002:", "!!")
        return f"YAML tags ({shown}) are not allowed: write plain values"
    if depth >= MAX_YAML_DEPTH:
        return f"YAML nested deeper than {MAX_YAML_DEPTH} levels (the limit)"
    return None


def parse_yaml(text: str, file: str | None = None) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML into plain data and a map of path -> 1-based line.

    Raises:
        DefinitionErrors: the YAML is malformed or uses refused features (with the line of the problem).
    """
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Composer = _StrictComposer
    try:
        node = yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or error.context
        reason = problem if isinstance(error, _Refused) else f"malformed YAML: {problem}"
        raise DefinitionErrors([DefinitionError(reason, file, line)]) from None
    except YAMLError as error:  # the reader's errors carry a position, not a mark
        position = getattr(error, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        reason = str(error).split("\n", 1)[0]
        raise DefinitionErrors([DefinitionError(f"malformed YAML: {reason}", file, line)]) from None
    lines: dict[tuple[Any, ...], int] = {}
    return _plain(node, (), lines), lines


def _plain(node: Any, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    """Strip ruamel's round-trip types, recording where each key and item sits."""
    if isinstance(node, CommentedMap):
        lines.setdefault(path, node.lc.line + 1)
        result = {}
        for key, value in node.items():
            lines[path + (key,)] = _line(node.lc.key(key), lines[path])
            result[str(key) if not isinstance(key, (str, int)) else key] = _plain(value, path + (key,), lines)
        return result
    if isinstance(node, CommentedSeq):
        lines.setdefault(path, node.lc.line + 1)
        items = []
        for index, value in enumerate(node):
            lines[path + (index,)] = _line(node.lc.item(index), lines[path])
            items.append(_plain(value, path + (index,), lines))
        return items
    if isinstance(node, bool) or node is None:
        return node
    for plain_type in (int, float, str):
        if isinstance(node, plain_type):
            return plain_type(node)
    return node


def _line(position: Any, fallback: int) -> int:
    """ruamel's 0-based (line, column) as a 1-based line; the parent's line when it has none."""
    return position[0] + 1 if position else fallback


def load_text(text: str, file: str | None = None, extensions: Extensions | None = None) -> ProcessDefinition:
    """Parse and validate one definition.

    Raises:
        DefinitionErrors: every problem, with file and line; any unexpected failure
            too, as the file's error naming the exception type.
    """
    try:
        _check_size(len(text.encode("utf-8", "surrogatepass")), file)
        document, lines = parse_yaml(text, file)
        return build_definition(document, lines, file, extensions)
    except DefinitionErrors:
        raise
    except Exception as error:  # one file's failure, whatever it is, must not stop the others
        detail = str(error)[:200]
        reason = f"cannot load the definition: {type(error).__name__}" + (f": {detail}" if detail else "")
        raise DefinitionErrors([DefinitionError(reason, file, 1)]) from None


def load_file(path: Path, extensions: Extensions | None = None) -> ProcessDefinition:
    """Load one definition file (never reading more than the size limit)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        _check_size(len(data), str(path))
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DefinitionErrors([DefinitionError(f"cannot read file: {error}", str(path), 1)]) from None
    return load_text(text, str(path), extensions)


def _check_size(size: int, file: str | None) -> None:
    if size > MAX_FILE_BYTES:
        reason = f"file is larger than 1 MiB (the limit is {MAX_FILE_BYTES:,} bytes): split it into several definitions"
        raise DefinitionErrors([DefinitionError(reason, file, 1)])


def definition_files(paths: Iterable[Path]) -> list[Path]:
    """The definition files under these paths (folders are searched), flow tests left out."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file())
        else:
            candidates = [path]
        found.extend(p for p in candidates if is_definition_file(p))
    return found


def is_definition_file(path: Path) -> bool:
    """True for `*.yaml`/`*.yml`, except `*.test.yaml` flow tests and hidden files."""
    name = path.name
    return name.endswith(DEFINITION_SUFFIXES) and not name.endswith(TEST_SUFFIX) and not name.startswith(".")


def load_paths(paths: Iterable[Path], extensions: Extensions | None = None) -> LoadResult:
    """Load every definition under `paths`; a bad file is reported and the rest still load."""
    result = LoadResult()
    for path in definition_files(paths):
        try:
            definition = load_file(path, extensions)
        except DefinitionErrors as errors:
            result.errors.extend(errors.errors)
            continue
        if definition.id in result.definitions:
            first = result.files[definition.id]
            result.errors.append(
                DefinitionError(f"duplicate definition id '{definition.id}' (already defined in {first})", str(path), 1)
            )
            continue
        result.definitions[definition.id] = definition
        result.files[definition.id] = str(path)
    return result
