"""Kafka producing for actions, and the librdkafka security settings shared with the consumer.

`kafka_config` maps the environment-style settings of PRODUCT.md to librdkafka keys:

    KAFKA_SECURITY_PROTOCOL   security.protocol   PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    KAFKA_SASL_MECHANISM      sasl.mechanism      PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...
    KAFKA_SASL_USERNAME       sasl.username
    KAFKA_SASL_PASSWORD       sasl.password
    KAFKA_SSL_CA_LOCATION     ssl.ca.location     (CA bundle to trust)
    KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION, KAFKA_SSL_KEY_PASSWORD
                              ssl.certificate.location, ssl.key.location, ssl.key.password
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from process_engine.domain.errors import ActionError, ConfigError
from process_engine.domain.payloads import encode_payload

IDEMPOTENCY_HEADER = "idempotency-key"

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_PASS_THROUGH = {
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
}
# Delivery errors another attempt will not fix.
_PERMANENT_ERRORS = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError._INVALID_ARG,
}


def kafka_config(settings: Mapping[str, str]) -> dict[str, str]:
    """librdkafka security keys from environment-style settings; unset or empty ones are left out.

    Raises:
        ConfigError: an unknown protocol or mechanism, or SASL settings that do not fit
            the protocol; the message names the setting.
    """
    values = {name: value.strip() for name, value in settings.items() if value and value.strip()}
    config = {key: values[name] for name, key in _PASS_THROUGH.items() if name in values}
    protocol = values.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol not in _PROTOCOLS:
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}"
        )
    if "KAFKA_SECURITY_PROTOCOL" in values:
        config["security.protocol"] = protocol
    mechanism = values.get("KAFKA_SASL_MECHANISM", "").upper()
    sasl_given = mechanism or "sasl.username" in config or "sasl.password" in config
    if sasl_given and not protocol.startswith("SASL_"):
        raise ConfigError(
            "KAFKA_SASL_* settings need KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT, "
            f"got {protocol}"
        )
    if protocol.startswith("SASL_"):
        config["sasl.mechanism"] = _check_mechanism(mechanism or "PLAIN", config)
    return config


def _check_mechanism(mechanism: str, config: Mapping[str, str]) -> str:
    if mechanism not in _MECHANISMS:
        raise ConfigError(
            f"KAFKA_SASL_MECHANISM must be one of {', '.join(_MECHANISMS)}, got {mechanism!r}"
        )
    if mechanism in _PASSWORD_MECHANISMS:
        for name, key in (("KAFKA_SASL_USERNAME", "sasl.username"), ("KAFKA_SASL_PASSWORD", "sasl.password")):
            if key not in config:
                raise ConfigError(f"{name} is required with KAFKA_SASL_MECHANISM={mechanism}")
    return mechanism


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a produced message landed."""

    topic: str
    partition: int
    offset: int


class KafkaPublisher:
    """Produces one message at a time and waits for the broker to confirm it."""

    def __init__(self, config: Mapping[str, Any], delivery_timeout: float = 10.0):
        """`config` is librdkafka configuration with at least `bootstrap.servers`."""
        if not config.get("bootstrap.servers"):
            raise ConfigError("Kafka publisher needs bootstrap.servers (REDPANDA_BROKERS)")
        self.bootstrap = str(config["bootstrap.servers"])
        self.delivery_timeout = delivery_timeout
        merged = {"message.timeout.ms": int(delivery_timeout * 1000), "acks": "all"}
        merged.update(config)
        self._producer = Producer(merged)
        self._closed = False

    @property
    def target(self) -> str:
        """The bootstrap servers: for errors and breaker keys."""
        return f"kafka://{self.bootstrap}"

    def publish(
        self,
        topic: str,
        key: Any,
        payload: Any,
        headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Delivery:
        """Produce a message and wait for its delivery report.

        Dicts, lists and numbers are sent as JSON, text as UTF-8, bytes as they are,
        None as a null value (a tombstone). The idempotency key goes in the header
        `idempotency-key`, the W3C trace context in `traceparent` and `tracestate`
        (unless `headers` has its own traceparent).

        Raises:
            ActionError: delivery failed or timed out (retriable unless the broker
                said the message can never be accepted).
        """
        if self._closed:
            raise ActionError(f"Kafka publisher for {self.target} is closed")
        waiter = _DeliveryWaiter()
        try:
            self._producer.produce(
                topic,
                value=encode_value(payload),
                key=_encode_key(key),
                headers=_headers(headers, idempotency_key, traceparent, tracestate),
                on_delivery=waiter.on_delivery,
            )
        except BufferError:
            raise ActionError(f"Kafka producer queue for {self.target} is full") from None
        except KafkaException as error:
            raise _action_error(error.args[0], topic) from None
        return self._wait(waiter, topic, timeout or self.delivery_timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to `timeout`) and release the producer."""
        if self._closed:
            return
        self._closed = True
        if self._producer.flush(timeout):
            # Undelivered messages would make close() wait for them: drop them, their
            # actions already failed (or will be retried from the outbox).
            self._producer.purge()
            self._producer.poll(0)
        self._producer.close()

    def _wait(self, waiter: _DeliveryWaiter, topic: str, timeout: float) -> Delivery:
        deadline = time.monotonic() + timeout
        while not waiter.done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ActionError(f"Kafka {self.target} did not confirm delivery to {topic!r} within {timeout}s")
            # Serves delivery callbacks; another thread's poll may serve ours instead.
            self._producer.poll(min(remaining, 0.1))
        if waiter.error is not None:
            raise _action_error(waiter.error, topic)
        assert waiter.message is not None
        return Delivery(waiter.message.topic(), waiter.message.partition(), waiter.message.offset())


class _DeliveryWaiter:
    """Receives one delivery report, possibly on another thread."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: KafkaError | None = None
        self.message: Message | None = None

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        self.error = error
        self.message = message
        self.done.set()


def _action_error(error: KafkaError, topic: str) -> ActionError:
    retriable = error.code() not in _PERMANENT_ERRORS
    return ActionError(f"Kafka delivery to {topic!r} failed: {error.str()}", retriable=retriable)


def encode_value(payload: Any) -> bytes | None:
    """Message value: None stays None (a tombstone), else as `encode_payload` writes it."""
    return None if payload is None else encode_payload(payload)


def _encode_key(key: Any) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode("utf-8")


def _headers(
    headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None, idempotency_key: str | None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> list[tuple[str, bytes]]:
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    encoded = [(str(name), _encode_key(value)) for name, value in pairs]
    if idempotency_key is not None:
        encoded.append((IDEMPOTENCY_HEADER, idempotency_key.encode("utf-8")))
    if traceparent is not None and not any(name.lower() == "traceparent" for name, _ in encoded):
        encoded.append(("traceparent", traceparent.encode("ascii")))
        if tracestate is not None:
            encoded.append(("tracestate", tracestate.encode("ascii")))
    return encoded
