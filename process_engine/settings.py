"""One settings object, built from the environment (12-factor) and validated at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from process_engine.adapters.actions.destinations import AllowList
from process_engine.adapters.mqtt.publisher import MqttSettings
from process_engine.domain.durations import parse_duration
from process_engine.domain.errors import ConfigError
from process_engine.runtime.message_decoding import DEFAULT_MAX_MESSAGE_BYTES

# Channels that are not configured publish here, so a definition's `channel: alert`
# works out of the box and is easy to watch: mosquitto_sub -t 'process-engine/notify/#'.
DEFAULT_NOTIFY_TARGET = "mqtt:process-engine/notify/{channel}"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Everything `process-engine run` needs; names as in PRODUCT.md."""

    database_url: str
    kafka_brokers: str = "localhost:9092"
    group_id: str = "process-engine"
    definitions_path: Path = Path("processes/")
    mqtt_url: str | None = "mqtt://localhost:1883"
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    api_token: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    kafka_security: Mapping[str, str] = field(default_factory=dict)
    notify_channels: Mapping[str, str] = field(default_factory=dict)
    notify_default_target: str | None = DEFAULT_NOTIFY_TARGET
    batch_size: int = 500
    history_retention: str | None = None
    history_compress_after: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    history_refresh_interval: float = 60.0
    http_action_allow: str | None = None  # HTTP_ACTION_ALLOW as given; AllowList.parse reads it
    trace_ui_url: str | None = None  # TRACE_UI_URL: where the console links a trace id, `{trace_id}` in it

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            ConfigError: one clear line naming the setting that is missing or malformed.
        """
        database_url = _required(environ, "DATABASE_URL")
        if not database_url.startswith(("postgres://", "postgresql://")) and "=" not in database_url:
            raise ConfigError(f"DATABASE_URL must be a postgresql:// URL, got {database_url!r}")
        brokers_name = "REDPANDA_BROKERS" if environ.get("REDPANDA_BROKERS") else "KAFKA_BOOTSTRAP_SERVERS"
        brokers = environ.get(brokers_name) or "localhost:9092"
        for broker in brokers.split(","):
            _host_port(broker.strip(), brokers_name)
        host, port = _host_port(environ.get("PROCESS_ENGINE_HTTP_ADDR") or "0.0.0.0:8080", "PROCESS_ENGINE_HTTP_ADDR", lowest_port=0)
        return cls(
            database_url=database_url,
            kafka_brokers=brokers,
            group_id=environ.get("PROCESS_ENGINE_GROUP_ID") or "process-engine",
            definitions_path=Path(environ.get("PROCESS_DEFINITIONS_PATH") or "processes/"),
            mqtt_url=_mqtt_url(environ),
            http_host=host,
            http_port=port,
            api_token=environ.get("PROCESS_ENGINE_API_TOKEN") or None,
            log_level=_choice(environ, "LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
            log_format=_choice(environ, "LOG_FORMAT", ("json", "text"), "text"),
            kafka_security={k: v for k, v in environ.items() if k.startswith(("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_"))},
            notify_channels={k[len("NOTIFY_CHANNEL_"):].lower(): v for k, v in environ.items() if k.startswith("NOTIFY_CHANNEL_") and v},
            notify_default_target=environ.get("NOTIFY_DEFAULT_TARGET", DEFAULT_NOTIFY_TARGET) or None,
            batch_size=_positive_int(environ, "PROCESS_ENGINE_BATCH_SIZE", 500),
            history_retention=environ.get("HISTORY_RETENTION") or None,
            history_compress_after=environ.get("HISTORY_COMPRESS_AFTER") or None,
            max_message_bytes=_positive_int(environ, "MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES),
            history_refresh_interval=_seconds(environ, "HISTORY_REFRESH_INTERVAL", 60.0),
            http_action_allow=_allow_list(environ),
            trace_ui_url=_trace_ui_url(environ),
        )


def _required(environ: Mapping[str, str], name: str) -> str:
    value = (environ.get(name) or "").strip()
    if not value:
        raise ConfigError(f"{name} is not set (e.g. {name}=postgresql://user:pass@localhost:5432/processes)")
    return value


def _host_port(text: str, name: str, lowest_port: int = 1) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not lowest_port <= int(port) < 65536:
        raise ConfigError(f"{name} must be host:port (e.g. localhost:9092), got {text!r}")
    return host.strip("[]"), int(port)


def _mqtt_url(environ: Mapping[str, str]) -> str | None:
    value = environ.get("MQTT_URL")
    if value is None:
        return "mqtt://localhost:1883"
    value = value.strip()
    if value:
        MqttSettings.from_url(value)  # here, so a bad URL stops start-up before anything runs
    return value or None  # MQTT_URL= (empty) turns MQTT off


def _allow_list(environ: Mapping[str, str]) -> str | None:
    value = (environ.get("HTTP_ACTION_ALLOW") or "").strip()
    AllowList.parse(value)  # here, so a malformed entry stops start-up before anything runs
    return value or None


def _trace_ui_url(environ: Mapping[str, str]) -> str | None:
    value = (environ.get("TRACE_UI_URL") or "").strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")) or "{trace_id}" not in value:
        raise ConfigError(f"TRACE_UI_URL must be an http(s) URL with {{trace_id}} in it, e.g. http://localhost:16686/trace/{{trace_id}}, got {value!r}")
    return value


def _choice(environ: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str, upper: bool = False) -> str:
    value = (environ.get(name) or default).strip()
    value = value.upper() if upper else value.lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        return parse_duration(raw).total_seconds()
    except ValueError:
        raise ConfigError(f"{name} must be a duration such as 60s, 5m or 0s, got {raw!r}") from None


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if not raw:
        return default
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive whole number, got {raw!r}")
    return int(raw)
