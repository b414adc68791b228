"""Spans with the OpenTelemetry SDK, exported as the standard OTEL_* settings say.

Off (runtime.tracing.NoTracing, no span objects at all) unless one of
OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
is set (and OTEL_SDK_DISABLED is not `true`). The exporter is OTLP over HTTP unless
OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL is `grpc`; OTEL_TRACES_EXPORTER=console prints spans.
The service name is `process-engine` unless OTEL_SERVICE_NAME says otherwise.

Spans: `process-engine message` (one per instance start, child of the message's
traceparent, or the root of a fresh trace: the instance's trace context), `process-engine
batch` (one per committed batch, linked to the traces of its steps), `process-engine step`
(one per instance per batch, child of the instance's context, linked to its batch, and
to the trace of a message that refreshed or cancelled it from a trace of its own) and
`process-engine action` (one per attempt, child of the outbox row's context; its own
context is what the action passes on).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from process_engine.engine.commands import InstanceFailed, RecordHistory
from process_engine.ports import IncomingMessage, PendingAction, Step
from process_engine.runtime.trace_context import join_trace, split_trace, trace_id
from process_engine.runtime.tracing import ActionAttempt, NoTracing, Tracing

log = logging.getLogger("process_engine.tracing")
EXPORTER_SETTINGS = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME = "process-engine"
MAX_BATCH_LINKS = 128
_PROPAGATOR = TraceContextTextMapPropagator()


def tracing_from_environment(environ: Mapping[str, str]) -> Tracing:
    """SDK tracing when an OTEL_* exporter is configured, else NoTracing."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return NoTracing()
    if not any(environ.get(name) for name in EXPORTER_SETTINGS):
        return NoTracing()
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter_name == "none":
        return NoTracing()
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter_name, environ)))
    log.info("tracing on: %s exporter", exporter_name)
    return SdkTracing(provider)


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol.strip().lower() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers and timeout from the OTEL_* variables


def traceparent(span_context: trace.SpanContext) -> str:
    """A span context as a W3C traceparent."""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def stored_trace(span_context: trace.SpanContext) -> str:
    """A span context in the stored form: its traceparent, then `;` and its tracestate if it has one."""
    state = span_context.trace_state.to_header() if span_context.trace_state else None
    return join_trace(traceparent(span_context), state)


def parent_context(stored: str | None) -> Context:
    """A context whose remote parent is the stored trace context; empty (a new trace) if it is None or malformed."""
    traceparent_text, tracestate = split_trace(stored)
    if not traceparent_text:
        return Context()
    carrier = {"traceparent": traceparent_text}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier)


class _Attempt:
    """An action attempt's span, and the traceparent the action passes on."""

    __slots__ = ("span", "traceparent", "tracestate")

    def __init__(self, span: trace.Span):
        self.span = span
        context = span.get_span_context()
        self.traceparent = traceparent(context)
        self.tracestate = context.trace_state.to_header() or None if context.trace_state else None

    def failed(self, error: str) -> None:
        """Mark the span as failed with the error."""
        self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.add_event("exception", {"exception.message": error})


class SdkTracing:
    """Tracing with an OpenTelemetry TracerProvider (any span processor: OTLP, in-memory in tests)."""

    enabled = True

    def __init__(self, provider: TracerProvider, processor: SpanProcessor | None = None):
        if processor is not None:
            provider.add_span_processor(processor)
        self.provider = provider
        self.tracer = provider.get_tracer("process_engine")

    def instance_trace(self, message: IncomingMessage) -> str:
        """The message's span, child of its traceparent or a fresh trace's root: the instance's context."""
        c = message.coordinate
        span = self.tracer.start_span(
            "process-engine message", parent_context(join_trace(message.traceparent, message.tracestate)), SpanKind.CONSUMER,
            {"messaging.system": "kafka", "messaging.destination.name": c.topic,
             "messaging.kafka.partition": c.partition, "messaging.kafka.offset": c.offset},
        )
        span.end()
        return stored_trace(span.get_span_context())

    def steps_committed(self, steps: Sequence[Step]) -> None:
        """One batch span, then one span per step under its instance's trace."""
        if not steps:
            return
        now = time.time_ns()
        links = [Link(_span_context(s.instance.trace)) for s in steps[:MAX_BATCH_LINKS] if s.instance.trace]
        batch = self.tracer.start_span("process-engine batch", Context(), links=links, start_time=now,
                                       attributes={"process.steps": len(steps), "process.cause": _cause_kind(steps[0].causation_id)})
        batch_link = [Link(batch.get_span_context())]
        for step in steps:
            self._step(step, batch_link, now)
        batch.end()

    def _step(self, step: Step, links: list[Link], now: int) -> None:
        instance = step.instance
        history = [c for c in step.commands if type(c) is RecordHistory]
        started = min((int(c.at.timestamp() * 1e9) for c in history), default=now)
        activity = next((c.activity_id for c in reversed(history) if c.activity_id), instance.current_activity)
        attributes: dict[str, Any] = {
            "process.definition": instance.definition_id,
            "process.definition_version": instance.definition_version,
            "process.instance_id": instance.id,
            "process.status": instance.status,
            "process.cause": step.causation_id or "",
        }
        if activity:
            attributes["process.activity"] = activity
        if instance.correlation_key is not None:
            attributes["process.correlation_key"] = instance.correlation_key
        decided = [c.data["path"] for c in history if c.data and "path" in c.data and "result" in c.data]
        if decided:
            attributes["process.decision"] = ",".join(str(path) for path in decided)
        if step.linked_trace and trace_id(step.linked_trace) != trace_id(instance.trace):
            # A message from a trace of its own refreshed or cancelled the instance: the
            # step stays in the instance's trace and links to the message's.
            links = [*links, Link(_span_context(step.linked_trace), {"process.link": "message"})]
        span = self.tracer.start_span("process-engine step", parent_context(instance.trace), links=links,
                                      start_time=min(started, now), attributes=attributes)
        for command in step.commands:
            if type(command) is InstanceFailed:
                span.set_status(Status(StatusCode.ERROR, command.reason))
        span.end(end_time=now)

    @contextmanager
    def action_attempt(self, action: PendingAction) -> Iterator[ActionAttempt]:
        """The attempt's span, child of the outbox row's context; errors raised through it are recorded."""
        attributes = {"process.action": action.action, "process.instance_id": action.instance_id,
                      "process.activity": action.activity_id, "process.attempt": action.attempt,
                      "process.idempotency_key": action.idempotency_key}
        if action.definition_id:
            attributes["process.definition"] = action.definition_id
        with self.tracer.start_as_current_span("process-engine action", parent_context(action.trace_context),
                                               SpanKind.PRODUCER, attributes) as span:
            yield _Attempt(span)

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        self.provider.shutdown()


def _span_context(text: str) -> trace.SpanContext:
    return trace.get_current_span(parent_context(text)).get_span_context()


def _cause_kind(cause: str | None) -> str:
    """`message`, `timer`, `action`, `api`...: what the batch was made of."""
    if not cause:
        return "unknown"
    head = cause.split(":", 1)[0]
    return head if head in ("timer", "action", "hold", "queue", "schedule", "api") else "message"
