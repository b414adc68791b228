"""The W3C trace context as the engine keeps it: checked on the way in, one text field at rest.

An instance, its timers and its outbox rows keep one string: the `traceparent`, then,
when the trigger message had one, `;` and its `tracestate` (a traceparent never holds
`;`, so the first one splits them). Headers from the wire are checked as W3C Trace
Context says: a malformed traceparent is ignored (the instance starts a new trace), and
a tracestate without a valid traceparent, over 512 characters or with characters
outside printable ASCII is dropped, so nothing hostile reaches a stored row or an
outgoing header.
"""

from __future__ import annotations

import re

MAX_TRACESTATE = 512  # W3C: vendors must propagate at least 512 characters; more may be cut
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
TRACE_ID = re.compile(r"[0-9a-f]{32}")  # a trace id as Jaeger and process_history show it


def checked_traceparent(text: str | None) -> str | None:
    """`text` if it is a valid W3C traceparent (version 00 shape, non-zero ids), else None."""
    if not text or len(text) != 55 or not _TRACEPARENT.fullmatch(text):
        return None
    if text[:2] == "ff" or text[3:35] == _INVALID_TRACE_ID or text[36:52] == _INVALID_SPAN_ID:
        return None
    return text


def checked_tracestate(text: str | None) -> str | None:
    """`text` if it may be kept and passed on as a tracestate, else None."""
    if not text or len(text) > MAX_TRACESTATE or not _PRINTABLE.fullmatch(text):
        return None
    return text.strip() or None


def join_trace(traceparent: str | None, tracestate: str | None = None) -> str | None:
    """The stored form of a trace context: `traceparent[;tracestate]`, or None without a traceparent."""
    if traceparent is None:
        return None
    return f"{traceparent};{tracestate}" if tracestate else traceparent


def split_trace(text: str | None) -> tuple[str | None, str | None]:
    """A stored trace context as (traceparent, tracestate)."""
    if not text:
        return None, None
    parent, _, state = text.partition(";")
    return parent, state or None


def trace_id(text: str | None) -> str | None:
    """The 32-hex-digit trace id of a stored trace context."""
    return text[3:35] if text else None
