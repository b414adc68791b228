"""Tracing is off without OTEL_* exporter settings, and W3C headers are read as they come."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from process_engine.adapters.kafka.consumer import trace_headers
from process_engine.adapters.observability.tracing import SdkTracing, parent_context, traceparent, tracing_from_environment
from process_engine.domain.instance import InstanceState
from process_engine.ports import IncomingMessage, MessageCoordinate, Step
from process_engine.runtime.trace_context import checked_traceparent, checked_tracestate, join_trace, split_trace, trace_id
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


def test_only_a_well_formed_traceparent_and_a_bounded_tracestate_are_taken() -> None:
    assert checked_traceparent(PARENT) == PARENT
    for bad in (
        "garbage", PARENT.upper(), PARENT + "-00", "ff" + PARENT[2:], PARENT.replace("4bf92f3577b34da6a3ce929d0e0e4736", "0" * 32),
        PARENT.replace("00f067aa0ba902b7", "0" * 16), PARENT[:-2] + "\r\n", "", None,
    ):
        assert checked_traceparent(bad) is None, bad
    assert checked_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE") == "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"
    assert checked_tracestate("a=" + "b" * 600) is None
    assert checked_tracestate("a=1\r\nX-Injected: yes") is None
    assert checked_tracestate("a=\u00e9") is None
    # A hostile header: nothing of it is kept, and a tracestate never comes without its traceparent.
    assert trace_headers([("traceparent", b"00-zz\r\nX: 1"), ("tracestate", b"a=1")]) == (None, None)
    assert trace_headers([("traceparent", PARENT.encode()), ("tracestate", b"a=" + b"\xff" * 4)]) == (PARENT, None)


def test_the_stored_form_keeps_the_tracestate_after_the_traceparent() -> None:
    assert join_trace(PARENT, "a=1,b=2") == PARENT + ";a=1,b=2"
    assert split_trace(PARENT + ";a=1;x,b=2") == (PARENT, "a=1;x,b=2")  # the first ; splits: a traceparent has none
    assert split_trace(PARENT) == (PARENT, None) and split_trace(None) == (None, None)
    assert join_trace(None, "a=1") is None
    assert trace_id(PARENT + ";a=1") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert NoTracing().instance_trace(IncomingMessage(MessageCoordinate("t", 0, 1), b"{}", None, None, PARENT, "a=1")) == PARENT + ";a=1"


def test_a_message_from_another_trace_that_refreshes_an_instance_is_a_link_of_its_step() -> None:
    exporter = InMemorySpanExporter()
    tracing = SdkTracing(TracerProvider(), SimpleSpanProcessor(exporter))
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    state = InstanceState(id="i-1", definition_id="flow", definition_version=1, trace=PARENT + ";a=1")
    tracing.steps_committed([Step(state, 3, linked_trace=other), Step(state, 4, linked_trace=PARENT)])
    steps = [s for s in exporter.get_finished_spans() if s.name == "process-engine step"]
    assert [s.context.trace_id for s in steps] == [int(PARENT.split("-")[1], 16)] * 2  # both stay in the instance's trace
    assert steps[0].parent.span_id == int("00f067aa0ba902b7", 16)
    linked = [link.context.trace_id for link in steps[0].links if link.attributes.get("process.link") == "message"]
    assert linked == [int("0af7651916cd43dd8448eb211c80319c", 16)]
    assert not [link for link in steps[1].links if link.attributes.get("process.link")]  # the same trace: no link to itself
    assert steps[0].context.trace_state.get("a") == "1"  # the upstream tracestate goes on with the spans


def test_a_refreshing_message_with_its_own_trace_is_linked_from_the_step_it_causes() -> None:
    from tests.unit.test_dispatcher import Clock, example, make, reading

    store, dispatcher, _ = make([example("temperature-control.yaml")], Clock())
    committed: list[Step] = []
    dispatcher.on_steps = committed.extend
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    first, second = reading(27.0), reading(28.0)
    dispatcher.handle_batch([first._replace(traceparent=PARENT, tracestate="a=1")])
    [started] = committed
    assert started.instance.trace == PARENT + ";a=1" and started.linked_trace is None
    committed.clear()
    dispatcher.handle_batch([second._replace(traceparent=other)])
    [refreshed] = committed
    assert refreshed.instance.id == started.instance.id and refreshed.instance.trace == PARENT + ";a=1"
    assert refreshed.linked_trace == other
