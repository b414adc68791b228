"""What the host asks of tracing, and the default that costs nothing: no spans, context passed on.

The walker never sees a span: an instance carries its W3C trace context as plain
text (InstanceState.trace, in runtime.trace_context's form), its timers and outbox rows keep it beside them, and the
adapter in `adapters/observability/tracing.py` makes the spans when an OTEL_* exporter
is configured.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from process_engine.ports import IncomingMessage, PendingAction, Step
from process_engine.runtime.trace_context import join_trace, split_trace


class ActionAttempt(Protocol):
    """One attempt of an action, as its span sees it."""

    traceparent: str | None  # what the action passes on (MQTT user property, Kafka and HTTP header)
    tracestate: str | None

    def failed(self, error: str) -> None:
        """Record the attempt's error."""


class Tracing(Protocol):
    """Spans for messages, steps and action attempts."""

    enabled: bool  # False: the host skips the calls that only make spans

    def instance_trace(self, message: IncomingMessage) -> str | None:
        """The trace context (`traceparent[;tracestate]`) a new instance started by `message` belongs to."""

    def steps_committed(self, steps: Sequence[Step]) -> None:
        """A batch of steps is committed: its span and one per step."""

    def action_attempt(self, action: PendingAction) -> AbstractContextManager[ActionAttempt]:
        """A context around one attempt of an outbox action."""


class _PassOn:
    """An attempt with no span: the stored context goes on unchanged."""

    __slots__ = ("traceparent", "tracestate")

    def __init__(self, trace: str | None):
        self.traceparent, self.tracestate = split_trace(trace)

    def failed(self, error: str) -> None:
        """Nothing records it."""


class NoTracing:
    """Tracing off: no span is made; an upstream traceparent still reaches the actions."""

    enabled = False

    def instance_trace(self, message: IncomingMessage) -> str | None:
        """The message's own trace context, if it had one."""
        return join_trace(message.traceparent, message.tracestate)

    def steps_committed(self, steps: Sequence[Step]) -> None:
        """Nothing to do."""

    @contextmanager
    def action_attempt(self, action: PendingAction) -> Iterator[ActionAttempt]:
        """The stored context, passed on as it is."""
        yield _PassOn(action.trace_context)
