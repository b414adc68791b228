"""The built-in actions against real servers: Mosquitto, Tansu and a local HTTP server."""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler
from importlib.metadata import EntryPoint

import pytest

from process_engine.adapters.actions import (
    ENTRY_POINT_GROUP,
    ActionContext,
    ActionRegistry,
    DestinationPolicy,
    builtin_registry,
)
from process_engine.adapters.actions.circuit_breaker import BreakerBoard, CircuitOpenError
from process_engine.adapters.kafka.producer import KafkaPublisher
from process_engine.adapters.mqtt.publisher import MqttPublisher, MqttSettings
from process_engine.domain.errors import ActionError, ConfigError
from tests.fixtures.http import http_server as serve_http
from tests.fixtures.kafka import consume, create_topic, free_port, unique_topic

integration = pytest.mark.integration
CONTEXT = ActionContext(
    idempotency_key="inst-1:activate_cooling:1",
    instance_id="inst-1",
    activity_id="activate_cooling",
    attempt=1,
    definition_id="temperature-control",
)


class RecordingHandler(BaseHTTPRequestHandler):
    """Answers by path: /ok JSON, /text plain text, /fail 500, /missing 404, /slow waits."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        path = self.path.split("?")[0]
        if path == "/slow":
            time.sleep(1.0)  # the server side of a client timeout; the test does not wait on it
        status, content_type, content = {
            "/text": (200, "text/plain", b"accepted"),
            "/fail": (500, "text/plain", b"database down"),
            "/missing": (404, "text/plain", b"no such hook"),
            "/busy": (429, "text/plain", b"slow down"),
        }.get(path, (200, "application/json", json.dumps({"received": body.decode() or None}).encode()))
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture(scope="module")
def http_server():
    with serve_http(RecordingHandler) as server:
        yield server


@pytest.fixture
def base_url(http_server) -> str:
    http_server.requests.clear()
    return f"http://127.0.0.1:{http_server.server_address[1]}"


@pytest.fixture(scope="module")
def mqtt_publisher(mqtt_url):
    with MqttPublisher(MqttSettings.from_url(mqtt_url)) as publisher:
        yield publisher


@pytest.fixture(scope="module")
def kafka_publisher(kafka_bootstrap):
    publisher = KafkaPublisher({"bootstrap.servers": kafka_bootstrap})
    yield publisher
    publisher.close()


@pytest.fixture
def make_registry():
    """Factory for `builtin_registry(...)`; closes what it made after the test."""
    made = []

    def make(**options) -> ActionRegistry:
        # The test servers listen on loopback, which http actions may not call by default.
        options.setdefault("destinations", DestinationPolicy.from_setting("127.0.0.1"))
        made.append(builtin_registry(**options))
        return made[-1]

    yield make
    for registry in made:
        registry.close()


@pytest.fixture
def registry(make_registry):
    return make_registry(breakers=BreakerBoard(failure_threshold=2, cooldown_seconds=60))


# mqtt_publish

@integration
def test_mqtt_publish_delivers_json_with_the_idempotency_key(make_registry, mqtt_publisher, mqtt_recorder):
    recorder = mqtt_recorder("pe-actions/heatpump/#")
    registry = make_registry(mqtt=mqtt_publisher)

    result = registry.run(
        "mqtt_publish",
        {"topic": "pe-actions/heatpump/control", "payload": {"device_id": "hp-1", "command": "activate_cooling"}},
        CONTEXT,
    )

    assert result == {"topic": "pe-actions/heatpump/control", "qos": 1}
    [message] = recorder.wait_for(1)
    assert message.json() == {"device_id": "hp-1", "command": "activate_cooling"}
    assert message.qos == 1
    if recorder.protocol == "5" and mqtt_publisher.protocol == "5":
        assert message.user_properties["idempotency-key"] == CONTEXT.idempotency_key


def test_mqtt_publish_without_a_broker_names_the_setting(registry):
    with pytest.raises(ActionError, match="MQTT_URL") as caught:
        registry.run("mqtt_publish", {"topic": "a/b", "payload": 1}, CONTEXT)
    assert not caught.value.retriable


def test_mqtt_publish_validation(make_registry):
    registry = make_registry()
    assert registry.validate("mqtt_publish", {"topic": "a/b", "qos": 3}) == [
        "mqtt_publish config.qos must be one of 0, 1, 2, got 3"
    ]
    assert registry.validate("mqtt_publish", {"topic": "a/#"})
    assert registry.validate("mqtt_publish", {"topic": "${topic}", "qos": "${qos}"}) == []


# kafka_publish

@integration
def test_kafka_publish_produces_with_key_and_idempotency_header(make_registry, kafka_publisher, kafka_bootstrap):
    topic = create_topic(kafka_bootstrap, unique_topic("actions"))
    registry = make_registry(kafka=kafka_publisher)

    result = registry.run("kafka_publish", {"topic": topic, "key": "hp-1", "payload": {"temp": 26.5}}, CONTEXT)

    assert result == {"topic": topic, "partition": 0, "offset": 0}
    [message] = consume(kafka_bootstrap, topic, 1)
    assert message.key() == b"hp-1"
    assert json.loads(message.value()) == {"temp": 26.5}
    assert ("idempotency-key", CONTEXT.idempotency_key.encode()) in message.headers()


@integration
def test_kafka_publish_to_an_unreachable_cluster_times_out_retriably(make_registry):
    publisher = KafkaPublisher({"bootstrap.servers": f"127.0.0.1:{free_port()}", "log_level": 0}, delivery_timeout=1.0)
    try:
        registry = make_registry(kafka=publisher)
        started = time.monotonic()
        with pytest.raises(ActionError) as caught:
            registry.run("kafka_publish", {"topic": "t", "payload": {}}, CONTEXT)
        assert caught.value.retriable
        assert time.monotonic() - started < 5
    finally:
        publisher.close(timeout=0)


# http

@integration
def test_http_post_sends_json_and_the_idempotency_key(registry, base_url, http_server):
    result = registry.run("http", {"url": f"{base_url}/ok", "body": {"device": "hp-1"}}, CONTEXT)

    assert result == {"status": 200, "body": {"received": '{"device":"hp-1"}'}}
    [request] = http_server.requests
    assert request["method"] == "POST"
    assert request["headers"]["Idempotency-Key"] == CONTEXT.idempotency_key
    assert request["headers"]["Content-Type"] == "application/json"


@integration
def test_http_get_with_headers_returns_text(registry, base_url, http_server):
    result = registry.run(
        "http", {"method": "get", "url": f"{base_url}/text", "headers": {"X-Site": "plant-7"}}, CONTEXT
    )

    assert result == {"status": 200, "body": "accepted"}
    assert http_server.requests[0]["headers"]["X-Site"] == "plant-7"
    assert http_server.requests[0]["method"] == "GET"


@integration
@pytest.mark.parametrize("path, retriable", [("/fail", True), ("/busy", True), ("/missing", False)])
def test_http_error_statuses(registry, base_url, path, retriable):
    with pytest.raises(ActionError) as caught:
        registry.run("http", {"url": f"{base_url}{path}"}, CONTEXT)
    assert caught.value.retriable is retriable
    assert f"POST {base_url}{path} answered" in str(caught.value)


@integration
def test_http_timeout_is_retriable(registry, base_url):
    started = time.monotonic()
    with pytest.raises(ActionError, match="timed out") as caught:
        registry.run("http", {"url": f"{base_url}/slow", "timeout": "200ms"}, CONTEXT)
    assert caught.value.retriable
    assert time.monotonic() - started < 0.9


@integration
def test_http_unreachable_port_is_retriable_then_the_circuit_opens(registry):
    url = f"http://127.0.0.1:{free_port()}/hook"
    for _ in range(2):
        with pytest.raises(ActionError) as caught:
            registry.run("http", {"url": url}, CONTEXT)
        assert caught.value.retriable
        assert not isinstance(caught.value, CircuitOpenError)

    with pytest.raises(CircuitOpenError, match=r"circuit open for http://127\.0\.0\.1:\d+ until"):
        registry.run("http", {"url": url}, CONTEXT)


def test_http_timeout_accepts_durations(registry):
    assert registry.validate("http", {"url": "http://x", "timeout": "5s"}) == []
    assert registry.validate("http", {"url": "http://x", "timeout": "PT0.5S"}) == []
    assert registry.validate("http", {"url": "http://x", "timeout": 2}) == []
    assert "http config.timeout must be a positive duration" in registry.validate(
        "http", {"url": "http://x", "timeout": "soon"}
    )[0]
    assert registry.validate("http", {"url": "http://x", "timeout": 0})


def test_http_bad_url_is_not_retriable(registry):
    with pytest.raises(ActionError) as caught:
        registry.run("http", {"url": "ftp://example.com/x"}, CONTEXT)
    assert not caught.value.retriable


# notify

@integration
def test_notify_through_every_channel_kind(
    make_registry, mqtt_publisher, mqtt_recorder, kafka_publisher, kafka_bootstrap, base_url, http_server
):
    topic = create_topic(kafka_bootstrap, unique_topic("alerts"))
    recorder = mqtt_recorder("pe-actions/alerts")
    registry = make_registry(
        mqtt=mqtt_publisher,
        kafka=kafka_publisher,
        channels={"alert": "mqtt:pe-actions/alerts", "audit": f"kafka:{topic}", "ops": f"{base_url}/hook"},
    )
    document = {"message": "Temperature still high after cooling", "instance_id": "inst-1", "activity_id": "activate_cooling"}

    for channel in ("alert", "audit", "ops"):
        registry.run("notify", {"channel": channel, "message": document["message"]}, CONTEXT)

    assert recorder.wait_for(1)[0].json() == {"channel": "alert", **document}
    [record] = consume(kafka_bootstrap, topic, 1)
    assert json.loads(record.value()) == {"channel": "audit", **document}
    assert record.key() == b"inst-1"
    assert ("idempotency-key", CONTEXT.idempotency_key.encode()) in record.headers()
    [request] = http_server.requests
    assert json.loads(request["body"]) == {"channel": "ops", **document}
    assert request["headers"]["Idempotency-Key"] == CONTEXT.idempotency_key


@integration
def test_notify_default_target_serves_unconfigured_channels(make_registry, mqtt_publisher, mqtt_recorder):
    recorder = mqtt_recorder("pe-actions/notify/#")
    registry = make_registry(mqtt=mqtt_publisher, notify_default_target="mqtt:pe-actions/notify/{channel}")

    assert registry.validate("notify", {"channel": "alert", "message": "hot"}) == []
    registry.run("notify", {"channel": "alert", "message": "hot"}, CONTEXT)

    [message] = recorder.wait_for(1)
    assert message.topic == "pe-actions/notify/alert"


@integration
def test_notify_webhook_errors_name_the_channel_not_the_secret_url(make_registry, base_url):
    registry = make_registry(channels={"ops": f"{base_url}/fail?token=s3cret"})
    with pytest.raises(ActionError) as caught:
        registry.run("notify", {"channel": "ops", "message": "x"}, CONTEXT)
    assert caught.value.retriable
    assert "notify channel 'ops' webhook answered 500" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_notify_unknown_channel_is_not_retriable(registry):
    assert "notify channel 'alert' is not configured" in registry.validate("notify", {"channel": "alert", "message": "x"})[0]
    with pytest.raises(ActionError) as caught:
        registry.run("notify", {"channel": "alert", "message": "x"}, CONTEXT)
    assert not caught.value.retriable


@pytest.mark.parametrize("target", ["mqtt://broker/home", "smtp:ops@example.com", "kafka:", "https://", "mqtt:home/#"])
def test_notify_malformed_channel_targets_fail_at_start_up(make_registry, target):
    with pytest.raises(ConfigError):
        make_registry(channels={"alert": target})


def test_notify_channel_needing_an_unconfigured_transport_fails_at_start_up(make_registry):
    with pytest.raises(ConfigError, match="MQTT_URL"):
        make_registry(channels={"alert": "mqtt:home/alerts"})


# log

def test_log_writes_to_the_actions_logger_with_the_instance(make_registry, caplog):
    registry = make_registry()
    with caplog.at_level(logging.DEBUG, logger="process_engine.actions"):
        result = registry.run("log", {"message": "Temperature normal: 21.5°C", "level": "warning"}, CONTEXT)

    [record] = [r for r in caplog.records if r.name == "process_engine.actions"]
    assert record.getMessage() == "Temperature normal: 21.5°C"
    assert record.levelno == logging.WARNING
    assert record.instance_id == "inst-1"
    assert record.activity_id == "activate_cooling"
    assert result == {"message": "Temperature normal: 21.5°C", "level": "warning"}


def test_log_validation(make_registry):
    registry = make_registry()
    assert registry.validate("log", {"message": "m"}) == []
    assert registry.validate("log", {"message": "m", "level": "loud"})
    assert registry.validate("log", {}) == ["log needs config.message"]
    assert registry.validate("log", None) == ["log needs config.message"]


# custom actions through entry points

class EchoAction:
    """A custom action as a plug-in package would provide it."""

    name = "ignored-the-entry-point-name-wins"

    def validate(self, config):
        return [] if "text" in config else ["echo needs config.text"]

    def run(self, config, context):
        return {"echo": config["text"], "attempt": context.attempt}


def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_entry_points_add_custom_actions(make_registry):
    registry = make_registry()
    loaded = registry.load_entry_points([entry_point("echo", f"{__name__}:EchoAction")])

    assert loaded == ["echo"]
    assert "echo" in registry.names()
    assert registry.validate("echo", {}) == ["echo needs config.text"]
    assert registry.run("echo", {"text": "hi"}, CONTEXT) == {"echo": "hi", "attempt": 1}


def test_entry_point_cannot_replace_a_builtin(make_registry):
    with pytest.raises(ConfigError, match="'log' is already taken"):
        make_registry().load_entry_points([entry_point("log", f"{__name__}:EchoAction")])


def test_broken_entry_point_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="entry point ghost = no_such_module:Action"):
        ActionRegistry().load_entry_points([entry_point("ghost", "no_such_module:Action")])


def test_unknown_action_and_custom_crash():
    registry = ActionRegistry([EchoAction()])
    with pytest.raises(ActionError) as unknown:
        registry.run("nope", {}, CONTEXT)
    assert not unknown.value.retriable
    with pytest.raises(ActionError, match="raised KeyError") as crash:
        registry.run(EchoAction.name, {}, CONTEXT)
    assert crash.value.retriable
