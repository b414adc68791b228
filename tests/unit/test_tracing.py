"""Tracing is off without OTEL_* exporter settings, and W3C headers are read as they come."""

from __future__ import annotations

from process_engine.adapters.kafka.consumer import trace_headers
from process_engine.adapters.observability.tracing import SdkTracing, parent_context, traceparent, tracing_from_environment
from process_engine.runtime.tracing import NoTracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_no_exporter_setting_means_no_tracing() -> None:
    assert isinstance(tracing_from_environment({}), NoTracing)
    assert isinstance(tracing_from_environment({"OTEL_SERVICE_NAME": "x"}), NoTracing)
    assert isinstance(tracing_from_environment({"OTEL_TRACES_EXPORTER": "none"}), NoTracing)
    assert isinstance(tracing_from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}), NoTracing)


def test_an_endpoint_turns_tracing_on_with_the_service_name() -> None:
    tracing = tracing_from_environment({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"})
    try:
        assert isinstance(tracing, SdkTracing)
        assert tracing.provider.resource.attributes["service.name"] == "process-engine"
    finally:
        tracing.provider.shutdown()


def test_traceparent_headers_are_found_whatever_their_case() -> None:
    assert trace_headers([("TraceParent", PARENT.encode()), ("tracestate", b"a=1"), ("x", b"y")]) == (PARENT, "a=1")
    assert trace_headers([("x", None)]) == (None, None)


def test_a_traceparent_round_trips_through_a_context() -> None:
    from opentelemetry import trace

    span_context = trace.get_current_span(parent_context(PARENT)).get_span_context()
    assert traceparent(span_context) == PARENT
    assert not trace.get_current_span(parent_context("garbage")).get_span_context().is_valid
