"""The named SQL blocks of `queries.sql`, read once per process."""

from __future__ import annotations

import functools
import re
from pathlib import Path

QUERIES_FILE = Path(__file__).with_name("queries.sql")
_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split `-- name: X` blocks into {X: sql}; text before the first name is a preamble."""
    parts = _NAME_LINE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{QUERIES_FILE.name}: query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@functools.cache
def all_queries() -> dict[str, str]:
    """Every query by name, loaded on first use."""
    return parse_queries(QUERIES_FILE.read_text(encoding="utf-8"))


def query(name: str) -> str:
    """The SQL of one named query; KeyError names the missing block."""
    try:
        return all_queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in {QUERIES_FILE}") from None
