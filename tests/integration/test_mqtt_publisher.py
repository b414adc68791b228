"""MqttPublisher against a real broker: acknowledgement, user properties, failures, reconnects."""

from __future__ import annotations

import time

import pytest

from process_engine.adapters.mqtt.publisher import MqttPublisher, MqttSettings
from process_engine.domain.errors import ActionError
from tests.fixtures.mqtt import MqttBroker, MqttRecorder, amqtt_available, free_port

pytestmark = pytest.mark.integration


def wait_until(predicate, timeout: float = 10.0) -> None:
    """Poll `predicate` until it holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition did not hold in time"
        time.sleep(0.02)


@pytest.fixture
def publisher(mqtt_url):
    with MqttPublisher(MqttSettings.from_url(mqtt_url)) as publisher:
        yield publisher


def test_qos1_publish_reaches_a_subscriber_with_the_idempotency_key(publisher, mqtt_recorder):
    recorder = mqtt_recorder("pe-test/control/#")

    publisher.publish(
        "pe-test/control/heatpump", {"command": "activate_cooling"}, qos=1, idempotency_key="i1:a1:1"
    )

    [message] = recorder.wait_for(1)
    assert message.topic == "pe-test/control/heatpump"
    assert message.json() == {"command": "activate_cooling"}
    assert message.qos == 1
    if publisher.protocol == "5" and recorder.protocol == "5":
        assert message.user_properties == {"idempotency-key": "i1:a1:1"}


def test_retained_text_payload_reaches_a_late_subscriber(publisher, mqtt_url):
    publisher.publish("pe-test/retained/status", "online", qos=1, retain=True)

    with MqttRecorder(mqtt_url, "pe-test/retained/status") as recorder:
        [message] = recorder.wait_for(1)
    assert message.payload == b"online"
    assert message.retain
    publisher.publish("pe-test/retained/status", b"", qos=1, retain=True)  # clear it


def test_publishing_without_a_broker_fails_quickly_and_clearly():
    port = free_port()
    with MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{port}")) as publisher:
        started = time.monotonic()
        with pytest.raises(ActionError) as caught:
            publisher.publish("pe-test/nowhere", {"a": 1})
        elapsed = time.monotonic() - started

    assert caught.value.retriable
    assert f"not connected to MQTT broker mqtt://127.0.0.1:{port}" in str(caught.value)
    assert elapsed < 1.0


def test_invalid_topic_is_not_retriable(publisher):
    with pytest.raises(ActionError) as caught:
        publisher.publish("pe-test/#", {"a": 1})
    assert not caught.value.retriable


def test_publisher_reconnects_after_the_broker_restarts(tmp_path):
    broker = MqttBroker(tmp_path).start()
    publisher = MqttPublisher(MqttSettings.from_url(broker.url), reconnect_min_delay=0.1, reconnect_max_delay=0.5)
    try:
        assert publisher.start()
        broker.stop()
        wait_until(lambda: not publisher.is_connected())
        with pytest.raises(ActionError):
            publisher.publish("pe-test/restart", {"n": 1})

        broker.start()
        wait_until(publisher.is_connected)
        with MqttRecorder(broker.url, "pe-test/restart") as recorder:
            publisher.publish("pe-test/restart", {"n": 2})
            assert recorder.wait_for(1)[0].json() == {"n": 2}
    finally:
        publisher.close()
        broker.stop()


@pytest.mark.skipif(not amqtt_available(), reason="amqtt is not installed")
def test_falls_back_to_mqtt_311_when_the_broker_refuses_v5(tmp_path):
    broker = MqttBroker(tmp_path, use_amqtt=True).start()
    try:
        with MqttPublisher(MqttSettings.from_url(broker.url)) as publisher, \
                MqttRecorder(broker.url, "pe-test/legacy") as recorder:
            assert publisher.protocol == "3.1.1"
            publisher.publish("pe-test/legacy", {"ok": True}, idempotency_key="k")
            [message] = recorder.wait_for(1)
        assert message.json() == {"ok": True}
        assert message.user_properties == {}
    finally:
        broker.stop()
