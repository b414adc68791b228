"""MQTT_URL parsing."""

from __future__ import annotations

import pytest

from process_engine.adapters.mqtt.publisher import MqttSettings, settings_from_environ
from process_engine.domain.errors import ActionError, ConfigError
from process_engine.domain.payloads import encode_payload


def test_full_url():
    settings = MqttSettings.from_url("mqtt://user:pass@broker.local:1884")
    assert settings == MqttSettings("broker.local", 1884, "user", "pass", tls=False)
    assert settings.target == "mqtt://broker.local:1884"


def test_defaults_ports_by_scheme():
    assert MqttSettings.from_url("mqtt://broker").port == 1883
    assert MqttSettings.from_url("mqtts://broker").port == 8883


def test_mqtts_means_tls():
    settings = MqttSettings.from_url("mqtts://broker:8883")
    assert settings.tls
    assert settings.target == "mqtts://broker:8883"


def test_credentials_are_percent_decoded():
    settings = MqttSettings.from_url("mqtt://svc%40site:p%3Ass%2Fw@broker")
    assert (settings.username, settings.password) == ("svc@site", "p:ss/w")


def test_username_without_password():
    settings = MqttSettings.from_url("mqtt://engine@broker")
    assert (settings.username, settings.password) == ("engine", None)


def test_trailing_slash_is_fine():
    assert MqttSettings.from_url("mqtt://broker:1883/").host == "broker"


@pytest.mark.parametrize(
    "url, reason",
    [
        ("", "scheme must be mqtt or mqtts"),
        ("broker:1883", "scheme must be mqtt or mqtts"),
        ("http://broker", "scheme must be mqtt or mqtts"),
        ("mqtt://", "no host"),
        ("mqtt://broker:notaport", "port"),
        ("mqtt://broker:99999", "port"),
        ("mqtt://broker/home/alerts", "path"),
    ],
)
def test_bad_urls_name_the_setting(url, reason):
    with pytest.raises(ConfigError) as caught:
        MqttSettings.from_url(url)
    message = str(caught.value)
    assert message.startswith("MQTT_URL is malformed")
    assert reason in message


def test_errors_never_show_the_password():
    with pytest.raises(ConfigError) as caught:
        MqttSettings.from_url("mqtt://user:s3cret@broker:port")
    assert "s3cret" not in str(caught.value)


def test_from_environ():
    assert settings_from_environ({}) is None
    assert settings_from_environ({"MQTT_URL": "mqtt://b:1"}) == MqttSettings("b", 1)


@pytest.mark.parametrize(
    "payload, encoded",
    [
        ({"a": 1}, b'{"a":1}'),
        ([1, 2], b"[1,2]"),
        ("text", b"text"),
        (b"\x00raw", b"\x00raw"),
        (None, b""),
        (21.5, b"21.5"),
    ],
)
def test_payload_encoding(payload, encoded):
    assert encode_payload(payload) == encoded


def test_unserialisable_payload_is_not_retriable():
    with pytest.raises(ActionError) as caught:
        encode_payload({"x": object()})
    assert not caught.value.retriable
