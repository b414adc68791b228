"""Read definition files with ruamel.yaml, keeping line numbers for every error."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from process_engine.domain.building import build_definition
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.errors import DefinitionError, DefinitionErrors
from process_engine.domain.extensions import Extensions

TEST_SUFFIX = ".test.yaml"
DEFINITION_SUFFIXES = (".yaml", ".yml")


@dataclass
class LoadResult:
    """Definitions that loaded, by id, and the errors of those that did not."""

    definitions: dict[str, ProcessDefinition] = field(default_factory=dict)
    errors: list[DefinitionError] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # definition id -> file


def parse_yaml(text: str, file: str | None = None) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML into plain data and a map of path -> 1-based line.

    Raises:
        DefinitionErrors: the YAML is malformed (with the line of the problem).
    """
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        node = yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = f"malformed YAML: {error.problem or error.context}"
        raise DefinitionErrors([DefinitionError(reason, file, line)]) from None
    except YAMLError as error:
        raise DefinitionErrors([DefinitionError(f"malformed YAML: {error}", file)]) from None
    lines: dict[tuple[Any, ...], int] = {}
    return _plain(node, (), lines), lines


def _plain(node: Any, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    """Strip ruamel's round-trip types, recording where each key and item sits."""
    if isinstance(node, CommentedMap):
        lines.setdefault(path, node.lc.line + 1)
        result = {}
        for key, value in node.items():
            lines[path + (key,)] = node.lc.key(key)[0] + 1
            result[str(key) if not isinstance(key, (str, int)) else key] = _plain(value, path + (key,), lines)
        return result
    if isinstance(node, CommentedSeq):
        lines.setdefault(path, node.lc.line + 1)
        items = []
        for index, value in enumerate(node):
            lines[path + (index,)] = node.lc.item(index)[0] + 1
            items.append(_plain(value, path + (index,), lines))
        return items
    if isinstance(node, bool) or node is None:
        return node
    for plain_type in (int, float, str):
        if isinstance(node, plain_type):
            return plain_type(node)
    return node


def load_text(text: str, file: str | None = None, extensions: Extensions | None = None) -> ProcessDefinition:
    """Parse and validate one definition.

    Raises:
        DefinitionErrors: every problem, with file and line.
    """
    document, lines = parse_yaml(text, file)
    return build_definition(document, lines, file, extensions)


def load_file(path: Path, extensions: Extensions | None = None) -> ProcessDefinition:
    """Load one definition file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DefinitionErrors([DefinitionError(f"cannot read file: {error}", str(path))]) from None
    return load_text(text, str(path), extensions)


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
