"""Tracing over the real broker, PostgreSQL and MQTT broker: W3C context in, spans out, context on the actions."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from process_engine.adapters.http.api import create_app
from process_engine.adapters.http.server import HttpServer
from process_engine.adapters.observability.tracing import SdkTracing
from process_engine.app import Engine
from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.http import http_server
from tests.fixtures.kafka import consume, create_topic, produce_json
from tests.integration.engine_harness import engine_settings, seed_copy, telemetry, unique

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def started(engine: Engine, tracing: SdkTracing | None = None) -> Engine:
    engine.tracing = tracing
    engine.build()
    engine.start()
    wait_until(lambda: engine.consumer.assigned, 30, "the consumer's partition assignment")
    return engine


def test_a_known_traceparent_parents_the_spans_and_reaches_mqtt_after_the_timer(
    database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path
) -> None:
    topic = unique("traced")
    seed_copy(tmp_path, topic, timer="1s", correlate="tags.device_id")
    create_topic(kafka_bootstrap, topic)
    commands = mqtt_recorder("home/heatpump/control")
    alerts = mqtt_recorder("process-engine/notify/alert")
    exporter = InMemorySpanExporter()
    tracing = SdkTracing(TracerProvider(), SimpleSpanProcessor(exporter))
    engine = started(Engine(engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))), tracing)
    try:
        produce_json(kafka_bootstrap, topic, [telemetry("hp-1", 31.0)], headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
        [command] = commands.wait_for(1, timeout=20)
        [alert] = alerts.wait_for(1, timeout=20)  # sent after the timer fired
        [instance] = engine.store.find_instances(InstanceQuery())
        assert instance.trace is not None and instance.trace.split("-")[1] == TRACE_ID
        if commands.protocol == "5":
            assert command.user_properties["traceparent"].split("-")[1] == TRACE_ID
            assert alert.user_properties["traceparent"].split("-")[1] == TRACE_ID
            assert command.user_properties["idempotency-key"] == f"{instance.id}:activate_cooling:1"
        wait_until(lambda: engine.store.load(instance.id).status == "completed", 10, "the instance to complete")
        history = engine.store.history(instance.id)
        assert {h.trace_id for h in history} == {TRACE_ID}

        def spans_named(name: str) -> list:
            return [s for s in exporter.get_finished_spans() if s.name == name]

        wait_until(lambda: len(spans_named("process-engine action")) >= 2, 10, "the action spans")
        [message] = spans_named("process-engine message")
        assert message.context.trace_id == int(TRACE_ID, 16)
        assert message.parent.span_id == int("00f067aa0ba902b7", 16)
        steps = [s for s in spans_named("process-engine step") if s.attributes["process.instance_id"] == instance.id]
        assert steps and all(s.context.trace_id == int(TRACE_ID, 16) for s in steps)
        first = steps[0]
        assert first.attributes["process.definition"] == "temperature-control"
        assert first.attributes["process.correlation_key"] == "hp-1"
        decisions = [s.attributes["process.decision"] for s in steps if "process.decision" in s.attributes]
        assert decisions[0] == "activate_cooling"  # check_temp's true_path: the decision's outcome
        causes = {str(s.attributes["process.cause"]).split(":")[0] for s in steps}
        assert {"timer", "action"} <= causes  # hours later, still the same trace
        actions = spans_named("process-engine action")
        assert all(a.context.trace_id == int(TRACE_ID, 16) for a in actions)
        assert {a.attributes["process.activity"] for a in actions} >= {"activate_cooling", "escalate"}
        assert spans_named("process-engine batch")

        # A message without headers starts a trace of its own.
        produce_json(kafka_bootstrap, topic, [telemetry("hp-2", 32.0)])
        wait_until(lambda: len(engine.store.find_instances(InstanceQuery())) == 2, 20, "the second instance")
        [fresh] = [i for i in engine.store.find_instances(InstanceQuery()) if i.id != instance.id]
        assert fresh.trace is not None and fresh.trace.split("-")[1] != TRACE_ID
        fresh_id = int(fresh.trace.split("-")[1], 16)
        wait_until(lambda: any(s.context.trace_id == fresh_id for s in spans_named("process-engine step")), 10, "its step span")
        assert [s.parent for s in spans_named("process-engine message") if s.context.trace_id == fresh_id] == [None]
    finally:
        engine.stop()


class OtlpReceiver(BaseHTTPRequestHandler):
    """A real OTLP/HTTP endpoint: decodes each protobuf export."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.lock:
            self.server.requests.append((self.path, request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        """Quiet."""


def test_spans_reach_an_otlp_http_endpoint_on_loopback(
    database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path, monkeypatch
) -> None:
    topic = unique("otlp")
    seed_copy(tmp_path, topic, timer="1s", correlate="tags.device_id")
    create_topic(kafka_bootstrap, topic)
    commands = mqtt_recorder("home/heatpump/control")
    with http_server(OtlpReceiver) as server:
        server.lock = threading.Lock()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{server.server_port}/v1/traces")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        engine = started(Engine(engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))))
        try:
            assert engine.tracing.enabled
            produce_json(kafka_bootstrap, topic, [telemetry("hp-9", 31.0)], headers={"traceparent": TRACEPARENT})
            commands.wait_for(1, timeout=20)

            def received() -> list:
                with server.lock:
                    return [
                        (resource, span) for _, request in server.requests for resource in request.resource_spans
                        for scope in resource.scope_spans for span in scope.spans
                    ]

            wait_until(lambda: any(s.name == "process-engine action" for _, s in received()), 20, "the action span exported")
        finally:
            engine.stop()
    spans = received()
    assert {path for path, _ in server.requests} == {"/v1/traces"}
    services = {a.value.string_value for r, _ in spans for a in r.resource.attributes if a.key == "service.name"}
    assert services == {"process-engine"}
    names = {s.name for _, s in spans}
    assert {"process-engine message", "process-engine batch", "process-engine step", "process-engine action"} <= names
    ours = [s for _, s in spans if s.trace_id.hex() == TRACE_ID]
    step = next(s for s in ours if s.name == "process-engine step")
    attributes = {a.key: a.value for a in step.attributes}
    assert attributes["process.definition"].string_value == "temperature-control"
    assert attributes["process.correlation_key"].string_value == "hp-9"
    assert attributes["process.instance_id"].string_value
    action = next(s for s in ours if s.name == "process-engine action")
    assert {a.key: a.value for a in action.attributes}["process.action"].string_value == "mqtt_publish"


RELAY = """
id: traced-relay
name: Relay a hot reading to a webhook and a Kafka topic
trigger:
  type: redpanda
  topic: TOPIC
  correlate: tags.device_id
  condition: fields.flow_temp_c > 25.0
variables:
  - {name: device_id, source: tags.device_id}
activities:
  - {id: start, type: start}
  - {id: hook, type: service, action: http, config: {url: "URL", body: {device: "${device_id}"}}, next: relay}
  - {id: relay, type: service, action: kafka_publish, config: {topic: OUT, key: "${device_id}", payload: {device: "${device_id}"}}, next: done}
  - {id: done, type: end}
"""
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


class Hook(BaseHTTPRequestHandler):
    """Records each request's headers and answers 200."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        """Quiet."""


@pytest.mark.parametrize("traced", [False, True], ids=["tracing-off", "tracing-on"])
def test_http_and_kafka_actions_carry_traceparent_and_tracestate(
    database_url, kafka_bootstrap, mqtt_url, tmp_path: Path, traced: bool
) -> None:
    topic, out = unique("relay-in"), unique("relay-out")
    create_topic(kafka_bootstrap, topic)
    create_topic(kafka_bootstrap, out)
    exporter = InMemorySpanExporter()
    with http_server(Hook) as hook:
        url = f"http://127.0.0.1:{hook.server_port}/hook"
        (tmp_path / "traced-relay.yaml").write_text(RELAY.replace("TOPIC", topic).replace("OUT", out).replace("URL", url))
        settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"), HTTP_ACTION_ALLOW="127.0.0.1")
        tracing = SdkTracing(TracerProvider(), SimpleSpanProcessor(exporter)) if traced else None
        engine = started(Engine(settings), tracing)
        try:
            headers = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
            produce_json(kafka_bootstrap, topic, [telemetry("hp-3", 30.0)], headers=headers)
            [relayed] = consume(kafka_bootstrap, out, 1, timeout=30)
            wait_until(lambda: hook.requests, 10, "the webhook call")
            [instance] = engine.store.find_instances(InstanceQuery())
            server = HttpServer(create_app(engine, None), "127.0.0.1", 0).start()
            try:  # from Jaeger back to the instance: the API lists the instances of a trace id
                listed = httpx.get(f"{server.url}/instances", params={"trace_id": TRACE_ID}).json()["instances"]
                assert [(i["id"], i["trace_id"]) for i in listed] == [(instance.id, TRACE_ID)]
                assert httpx.get(f"{server.url}/instances", params={"trace_id": unique("x")}).status_code == 400
                assert {h["trace_id"] for h in httpx.get(f"{server.url}/instances/{instance.id}").json()["history"]} == {TRACE_ID}
            finally:
                server.stop()
        finally:
            engine.stop()
    sent = {name: value.decode() for name, value in relayed.headers()}
    [request] = hook.requests
    called = {name.lower(): value for name, value in request.items()}
    for passed in (sent, called):
        assert passed["tracestate"] == TRACESTATE  # kept with the instance and its outbox rows, passed on as it came
        assert passed["traceparent"].split("-")[1] == TRACE_ID
        assert passed["idempotency-key"].startswith(f"{instance.id}:")
    assert instance.trace.split(";")[1] == TRACESTATE
    if traced:  # the action attempt's own span is the parent the next hop sees
        actions = {s.context.span_id for s in exporter.get_finished_spans() if s.name == "process-engine action"}
        assert {int(p["traceparent"].split("-")[2], 16) for p in (sent, called)} <= actions
    else:  # nothing made a span: the trigger's own context goes on unchanged
        assert sent["traceparent"] == called["traceparent"] == TRACEPARENT


def test_a_malformed_traceparent_starts_a_fresh_trace_and_is_never_passed_on(
    database_url, kafka_bootstrap, mqtt_url, tmp_path: Path
) -> None:
    topic, out = unique("relay-in"), unique("relay-out")
    create_topic(kafka_bootstrap, topic)
    create_topic(kafka_bootstrap, out)
    with http_server(Hook) as hook:
        url = f"http://127.0.0.1:{hook.server_port}/hook"
        (tmp_path / "traced-relay.yaml").write_text(RELAY.replace("TOPIC", topic).replace("OUT", out).replace("URL", url))
        settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"), HTTP_ACTION_ALLOW="127.0.0.1")
        engine = started(Engine(settings))
        try:
            hostile = {"traceparent": "00-" + "z" * 32 + "-\r\nX-Injected: 1", "tracestate": "a=" + "b" * 10_000}
            produce_json(kafka_bootstrap, topic, [telemetry("hp-4", 30.0)], headers=hostile)
            [relayed] = consume(kafka_bootstrap, out, 1, timeout=30)
            wait_until(lambda: hook.requests, 10, "the webhook call")
            [instance] = engine.store.find_instances(InstanceQuery())
        finally:
            engine.stop()
    assert instance.status == "completed" and instance.trace is None  # tracing off, no valid context: none kept
    assert not {name for name, _ in relayed.headers()} & {"traceparent", "tracestate"}
    assert not {name.lower() for name in hook.requests[0]} & {"traceparent", "tracestate", "x-injected"}
