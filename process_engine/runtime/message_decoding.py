"""A trigger message's bytes to a JSON object, or the reason it is refused.

Everything a message can do to the engine starts here, so the limits are checked
before anything else reads it: its size before decoding, its nesting right after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_MAX_MESSAGE_DEPTH = 64


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """How large and how deeply nested a trigger message may be (MAX_MESSAGE_BYTES, depth 64)."""

    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_depth: int = DEFAULT_MAX_MESSAGE_DEPTH


class Refused(str):
    """Why a message was refused: a string, so callers dead-letter it as the reason."""


def decode_message(value: bytes | None, limits: MessageLimits) -> dict[str, Any] | Refused:
    """The message as a JSON object, or a Refused reason naming the limit or the fault."""
    if value is None:
        return Refused("empty message (no value)")
    if len(value) > limits.max_bytes:
        return Refused(f"too large: {len(value):,} bytes, over MAX_MESSAGE_BYTES ({limits.max_bytes:,})")
    try:
        document = orjson.loads(value)  # refuses NaN and 1e999, which jsonb cannot hold
    except (ValueError, UnicodeDecodeError) as error:  # orjson's own depth limit (1,024) lands here too
        return Refused(f"not JSON: {error}")
    if not isinstance(document, dict):
        return Refused(f"wrong shape: expected a JSON object, got {type(document).__name__}")
    # Only a message with that many brackets (each opened and closed) can be that deep:
    # its size says so first, counting them is C speed.
    deep = len(value) > 2 * limits.max_depth + 1 and value.count(b"{") + value.count(b"[") > limits.max_depth
    if deep and nested_deeper(document, limits.max_depth):
        return Refused(f"nested deeper than {limits.max_depth} levels")
    return document


def nested_deeper(document: Any, limit: int) -> bool:
    """True when objects and arrays nest more than `limit` levels; iterative, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
