"""Mapping KAFKA_* settings to librdkafka keys."""

from __future__ import annotations

import pytest

from process_engine.adapters.kafka.producer import kafka_config
from process_engine.domain.errors import ConfigError


def test_nothing_set_means_plaintext_defaults():
    assert kafka_config({}) == {}
    assert kafka_config({"KAFKA_SECURITY_PROTOCOL": "", "UNRELATED": "x"}) == {}


def test_sasl_ssl_with_scram():
    config = kafka_config({
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-256",
        "KAFKA_SASL_USERNAME": "engine",
        "KAFKA_SASL_PASSWORD": "secret",
        "KAFKA_SSL_CA_LOCATION": "/etc/ssl/ca.pem",
    })
    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "engine",
        "sasl.password": "secret",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }


def test_sasl_mechanism_defaults_to_plain():
    config = kafka_config({
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_USERNAME": "u",
        "KAFKA_SASL_PASSWORD": "p",
    })
    assert config["sasl.mechanism"] == "PLAIN"


def test_ssl_with_client_certificate():
    config = kafka_config({
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CERTIFICATE_LOCATION": "/c.pem",
        "KAFKA_SSL_KEY_LOCATION": "/k.pem",
        "KAFKA_SSL_KEY_PASSWORD": "kp",
    })
    assert config == {
        "security.protocol": "SSL",
        "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/k.pem",
        "ssl.key.password": "kp",
    }


def test_oauthbearer_needs_no_password():
    config = kafka_config({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER"})
    assert config["sasl.mechanism"] == "OAUTHBEARER"


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "MD5"}, "KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_malformed_settings_are_named(settings, named):
    with pytest.raises(ConfigError) as caught:
        kafka_config(settings)
    assert named in str(caught.value)


def test_secrets_are_not_echoed_in_errors():
    with pytest.raises(ConfigError) as caught:
        kafka_config({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_PASSWORD": "s3cret"})
    assert "s3cret" not in str(caught.value)
