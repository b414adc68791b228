"""MQTT: the `MQTT_URL` setting and a publisher that waits for the broker's acknowledgement.

`MqttPublisher` runs paho-mqtt 2's network thread (`loop_start`), which reconnects
with exponential backoff after the broker goes away. It speaks MQTT v5 and falls
back to 3.1.1 when the broker refuses v5 (amqtt, old Mosquitto). On v5 every
message carries its idempotency key as the user property `idempotency-key`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from process_engine.domain.errors import ActionError, ConfigError
from process_engine.domain.payloads import encode_payload

logger = logging.getLogger(__name__)

IDEMPOTENCY_PROPERTY = "idempotency-key"
TRACEPARENT_PROPERTY = "traceparent"  # W3C trace context, as OpenTelemetry's MQTT conventions name it
TRACESTATE_PROPERTY = "tracestate"
_URL_EXAMPLE = "mqtt://user:pass@host:1883, or mqtts:// for TLS"
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# CONNACK codes that mean "this broker does not speak the protocol version you asked for":
# 0x84 from a v5-aware broker, 1 from a 3.1.1 broker answering in its own format.
_UNSUPPORTED_PROTOCOL = {0x84, 1}


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Where the MQTT broker is and how to log in."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str, setting: str = "MQTT_URL") -> MqttSettings:
        """Parse `mqtt://user:pass@host:1883` (`mqtts://` for TLS).

        Raises:
            ConfigError: the URL is malformed; the message names `setting`.
        """
        def invalid(reason: str) -> ConfigError:
            return ConfigError(f"{setting} is malformed: {reason} (expected {_URL_EXAMPLE})")

        parts = urlsplit((url or "").strip())
        if parts.scheme not in _DEFAULT_PORTS:
            raise invalid(f"scheme must be mqtt or mqtts, got {parts.scheme or 'none'!r}")
        if not parts.hostname:
            raise invalid("no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise invalid("it must not have a path or query")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise invalid("the port is not a number between 0 and 65535") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "mqtts",
        )

    @property
    def target(self) -> str:
        """The broker as a URL without credentials: for logs, errors and breaker keys."""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


class MqttPublisher:
    """Publishes to one MQTT broker and waits for the acknowledgement (PUBACK for QoS 1)."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str | None = None,
        reconnect_min_delay: float = 1.0,
        reconnect_max_delay: float = 30.0,
        keepalive: int = 60,
    ):
        self.settings = settings
        self.client_id = client_id or f"process-engine-{uuid.uuid4().hex[:12]}"
        self._reconnect_delays = (reconnect_min_delay, reconnect_max_delay)
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self._protocol = MQTTProtocolVersion.MQTTv5
        self._connected = threading.Event()
        self._answered = threading.Event()
        self._downgrade = False
        self._last_problem = "not connected yet"
        self._failed_acks: dict[int, str] = {}

    @property
    def target(self) -> str:
        """The broker URL without credentials."""
        return self.settings.target

    @property
    def protocol(self) -> str:
        """`5` or `3.1.1`: the protocol version in use."""
        return "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"

    def start(self, wait: float = 5.0) -> bool:
        """Start connecting in the background; wait up to `wait` seconds for a first answer.

        Returns whether the publisher is connected. When it is not, the network
        thread keeps retrying and `publish` raises a retriable ActionError meanwhile.
        """
        with self._lock:
            if self._client is None:
                self._launch_client()
        self._answered.wait(wait)
        if self._apply_downgrade():
            self._answered.wait(wait)
        return self._connected.is_set()

    def is_connected(self) -> bool:
        """Whether the broker connection is up right now."""
        self._apply_downgrade()
        return self._connected.is_set()

    def publish(
        self,
        topic: str,
        payload: Any,
        qos: int = 1,
        retain: bool = False,
        idempotency_key: str | None = None,
        timeout: float = 10.0,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        """Publish and wait until the broker acknowledges it (QoS 1/2) or it is sent (QoS 0).

        Dicts and lists are sent as JSON.

        Raises:
            ActionError: not connected, or no acknowledgement within `timeout`
                (retriable); a bad topic, QoS or payload, or the broker refused the
                message (not retriable).
        """
        if qos not in (0, 1, 2):
            raise ActionError(f"MQTT qos must be 0, 1 or 2, got {qos!r}", retriable=False)
        if not topic or "+" in topic or "#" in topic:
            raise ActionError(f"invalid MQTT topic to publish to: {topic!r}", retriable=False)
        body = encode_payload(payload)
        client = self._require_connection()
        info = client.publish(topic, body, qos, retain, self._properties(idempotency_key, traceparent, tracestate))
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ActionError(f"MQTT publish to {self.target} failed: {paho.error_string(info.rc)}")
        self._wait_for_ack(info, topic, timeout)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            self._stop_client(client)
        self._connected.clear()

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _launch_client(self) -> None:
        """Create the client and start its network thread; the caller holds the lock."""
        client = self._build_client()
        # Set before the thread starts: callbacks ignore clients that are not current.
        self._client = client
        client.connect_async(self.settings.host, self.settings.port, self._keepalive)
        client.loop_start()

    def _build_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self._protocol,
            reconnect_on_failure=True,
        )
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
        if self.settings.tls:
            client.tls_set()  # the system's CA certificates
        client.reconnect_delay_set(*self._reconnect_delays)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _stop_client(self, client: paho.Client) -> None:
        client.disconnect()
        client.loop_stop()

    def _apply_downgrade(self) -> bool:
        """Replace a v5 client the broker refused with a 3.1.1 one (off the network thread)."""
        with self._lock:
            if not self._downgrade or self._client is None:
                return False
            old = self._client
            self._downgrade = False
            self._protocol = MQTTProtocolVersion.MQTTv311
            self._answered.clear()
            self._launch_client()
        logger.info("MQTT broker %s refused MQTT v5; using 3.1.1", self.target)
        self._stop_client(old)
        return True

    def _require_connection(self) -> paho.Client:
        self._apply_downgrade()
        client = self._client
        if client is None:
            raise ActionError(f"MQTT publisher for {self.target} is not started")
        if not self._connected.is_set():
            raise ActionError(f"not connected to MQTT broker {self.target}: {self._last_problem}")
        return client

    def _properties(self, idempotency_key: str | None, traceparent: str | None = None, tracestate: str | None = None) -> Properties | None:
        if (idempotency_key is None and traceparent is None) or self._protocol != MQTTProtocolVersion.MQTTv5:
            return None
        properties = Properties(PacketTypes.PUBLISH)
        user = [(IDEMPOTENCY_PROPERTY, idempotency_key)] if idempotency_key is not None else []
        if traceparent is not None:
            user.append((TRACEPARENT_PROPERTY, traceparent))
            if tracestate is not None:
                user.append((TRACESTATE_PROPERTY, tracestate))
        properties.UserProperty = user
        return properties

    def _wait_for_ack(self, info: paho.MQTTMessageInfo, topic: str, timeout: float) -> None:
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as error:
            raise ActionError(f"MQTT publish to {self.target} failed: {error}") from None
        refusal = self._failed_acks.pop(info.mid, None)
        if refusal is not None:
            raise ActionError(
                f"MQTT broker {self.target} refused the message on {topic!r}: {refusal}",
                retriable=False,
            )
        if not info.is_published():
            raise ActionError(
                f"MQTT broker {self.target} did not acknowledge the message on {topic!r} "
                f"within {timeout}s"
            )

    # paho callbacks: they run on the network thread of `client`.

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self._client:
            return
        if not reason_code.is_failure:
            self._last_problem = ""
            self._connected.set()
        elif self._protocol == MQTTProtocolVersion.MQTTv5 and reason_code.value in _UNSUPPORTED_PROTOCOL:
            self._downgrade = True
            self._last_problem = "the broker refused MQTT v5; switching to 3.1.1"
        else:
            self._last_problem = f"the broker refused the connection: {reason_code}"
            logger.warning("MQTT broker %s refused the connection: %s", self.target, reason_code)
        self._answered.set()

    def _on_connect_fail(self, client, userdata) -> None:
        if client is not self._client:
            return
        self._last_problem = "cannot connect (retrying in the background)"
        self._answered.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self._client:
            return
        if self._connected.is_set():
            logger.warning("MQTT broker %s disconnected: %s", self.target, reason_code)
        self._connected.clear()
        if not self._last_problem:
            self._last_problem = f"disconnected ({reason_code}); reconnecting"

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failed_acks[mid] = str(reason_code)


def settings_from_environ(environ: Mapping[str, str]) -> MqttSettings | None:
    """`MQTT_URL` from an environment mapping, or None when it is not set."""
    url = environ.get("MQTT_URL", "").strip()
    return MqttSettings.from_url(url) if url else None
