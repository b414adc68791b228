"""Config templates for service actions: `${name}` in strings, compiled once, rendered often.

A string that is exactly `${name}` keeps the variable's type; other strings are
interpolated. `${device.id}` walks into dict variables (and `${items.0}` into lists),
and `$${` writes a literal `${`. Dicts, lists and tuples are rendered recursively.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from process_engine.domain.errors import ExpressionError

_PLACEHOLDER = re.compile(r"\$\$\{|\$\{(?P<reference>[^{}]*)\}|(?P<unclosed>\$\{)")


class _Node(Protocol):
    def render(self, variables: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Literal:
    """A value with no references, returned as it is."""

    value: Any

    def render(self, variables: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class _Reference:
    """`${name}` or `${name.key.0}`: a variable, optionally walked into."""

    name: str
    path: tuple[str, ...]

    def render(self, variables: Mapping[str, Any]) -> Any:
        if self.name not in variables:
            raise ExpressionError(f"template variable {self.name!r} is not defined")
        value = variables[self.name]
        for depth, key in enumerate(self.path):
            value = _step(value, key, ".".join((self.name, *self.path[:depth])))
        return value


@dataclass(frozen=True, slots=True)
class _Text:
    """A string mixing literal text and references; always renders to a string."""

    parts: tuple[str | _Reference, ...]

    def render(self, variables: Mapping[str, Any]) -> str:
        return "".join(
            part if isinstance(part, str) else _as_text(part.render(variables))
            for part in self.parts
        )


@dataclass(frozen=True, slots=True)
class _Mapping:
    """A dict whose keys and values are rendered."""

    items: tuple[tuple[_Node, _Node], ...]

    def render(self, variables: Mapping[str, Any]) -> dict[Any, Any]:
        return {key.render(variables): value.render(variables) for key, value in self.items}


@dataclass(frozen=True, slots=True)
class _Sequence:
    """A list or tuple whose items are rendered; the type is kept."""

    items: tuple[_Node, ...]
    kind: type

    def render(self, variables: Mapping[str, Any]) -> list[Any] | tuple[Any, ...]:
        return self.kind(item.render(variables) for item in self.items)


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled config value (string, dict, list or plain value)."""

    source: Any = field(compare=False)
    names: frozenset[str]
    _root: _Node = field(repr=False)

    def render(self, variables: Mapping[str, Any]) -> Any:
        """Fill in the variables.

        Args:
            variables: process variables by name.

        Returns:
            A new value of the source's shape; a lone `${name}` keeps its type.

        Raises:
            ExpressionError: a referenced variable or key is missing.
        """
        return self._root.render(variables)


def compile_template(value: Any) -> Template:
    """Split every string of a config value into literal text and references, once.

    Args:
        value: a string, dict, list, tuple or any other value (passed through).

    Returns:
        A Template to render with each instance's variables.

    Raises:
        ExpressionError: a `${` is not closed or a reference is empty.
    """
    names: set[str] = set()
    root = _compile(value, names)
    return Template(value, frozenset(names), root)


def _compile(value: Any, names: set[str]) -> _Node:
    if isinstance(value, str):
        return _compile_string(value, names)
    if isinstance(value, Mapping):
        items = tuple((_compile(key, names), _compile(item, names)) for key, item in value.items())
        return _Mapping(items)
    if isinstance(value, (list, tuple)):
        return _Sequence(tuple(_compile(item, names) for item in value), type(value))
    return _Literal(value)


def _compile_string(text: str, names: set[str]) -> _Node:
    parts: list[str | _Reference] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[position : match.start()])
        parts.append(_placeholder(match, text, names))
        position = match.end()
    parts.append(text[position:])
    merged = _merge_literals(parts)
    if not merged:
        return _Literal("")
    if len(merged) == 1:
        return merged[0] if isinstance(merged[0], _Reference) else _Literal(merged[0])
    return _Text(tuple(merged))


def _placeholder(match: re.Match[str], text: str, names: set[str]) -> str | _Reference:
    """`${` for an escaped `$${`, else the reference a `${...}` stands for."""
    if match["unclosed"]:
        raise ExpressionError(f"template {text!r} has a `${{` without a closing `}}`")
    if match["reference"] is None:
        return "${"
    path = tuple(part.strip() for part in match["reference"].split("."))
    if not all(path):
        raise ExpressionError(f"template {text!r} has an empty or malformed {match[0]}")
    names.add(path[0])
    return _Reference(path[0], path[1:])


def _merge_literals(parts: list[str | _Reference]) -> list[str | _Reference]:
    """Join neighbouring literal strings and drop empty ones."""
    merged: list[str | _Reference] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    return merged


def _step(value: Any, key: str, where: str) -> Any:
    """One step of a dotted path: a dict key, or a list index when the key is a number."""
    if isinstance(value, Mapping):
        if key in value:
            return value[key]
        raise ExpressionError(f"template variable {where!r} has no key {key!r}")
    if isinstance(value, (list, tuple)) and key.lstrip("-").isdigit():
        index = int(key)
        if -len(value) <= index < len(value):
            return value[index]
        raise ExpressionError(f"template variable {where!r} has no index {index}")
    kind = type(value).__name__
    raise ExpressionError(f"template variable {where!r} is of type {kind}, it has no {key!r}")


def _as_text(value: Any) -> str:
    """Text for interpolation: strings as they are, JSON for structures, booleans and null."""
    if isinstance(value, str):
        return value
    try:
        if value is None or isinstance(value, (bool, dict, list, tuple)):
            return json.dumps(value, ensure_ascii=False, default=str)
        return str(value)
    except (RecursionError, ValueError) as error:  # nested too deep, a cycle, an int of over 4,300 digits
        raise ExpressionError(f"cannot interpolate a {type(value).__name__} as text: {error}") from None


# An encoder gets the text rendered so far and one `${}` value's text, and returns what
# goes in its place: a URL percent-encodes the value, an MQTT topic keeps it in one level.
Encoder = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class _EncodedText:
    """A `_Text` whose values pass through an encoder."""

    parts: tuple[str | _Reference, ...]
    encode: Encoder = field(compare=False)

    def render(self, variables: Mapping[str, Any]) -> str:
        text = ""
        for part in self.parts:
            text += part if isinstance(part, str) else self.encode(text, _as_text(part.render(variables)))
        return text


def compile_config(config: Mapping[str, Any], encoders: Mapping[str, Encoder]) -> Template:
    """`compile_template` of an action's config whose top-level `encoders` keys hold text with `${}` values in it.

    Only strings that mix text and references are encoded: a lone `${name}` keeps
    its value (a whole URL or topic taken from a variable).

    Raises:
        ExpressionError: as compile_template.
    """
    template = compile_template(config)
    root = template._root
    assert isinstance(root, _Mapping)
    items = tuple(
        (key, _EncodedText(value.parts, encoders[key.value]))
        if isinstance(key, _Literal) and isinstance(value, _Text) and key.value in encoders
        else (key, value)
        for key, value in root.items
    )
    return Template(template.source, template.names, _Mapping(items))
