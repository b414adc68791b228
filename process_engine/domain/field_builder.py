"""What the per-type field readers need of the definition builder: compile pieces, record problems."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol

from process_engine.domain.expressions import Expression
from process_engine.domain.extensions import Extensions
from process_engine.domain.templates import Encoder, Template

Path = tuple[Any, ...]


class FieldBuilder(Protocol):
    """What a reader needs of the builder: compile pieces, record problems."""

    extensions: Extensions

    def fail(self, path: Path, reason: str) -> None:
        """Record a problem at `path`."""

    def expression(self, path: Path, text: Any) -> Expression | None:
        """Compile an expression, or record why not."""

    def duration(self, path: Path, text: Any) -> timedelta | None:
        """Parse a duration, or record why not."""

    def template(self, path: Path, value: Any, encoders: Mapping[str, Encoder] | None = None) -> Template | None:
        """Compile a config template (with `encoders` for some keys' values), or record why not."""

    def text(self, mapping: Mapping[str, Any], key: str, path: Path, required: bool = True) -> str | None:
        """A string field, or record why not."""
