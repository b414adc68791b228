"""Dockerfile, docker-compose.yml and deploy/mosquitto.conf, checked without a Docker engine (Grafana's files: test_grafana_files.py).

`docker compose config` cannot run here; these tests parse the files and hold them to
what the engine reads (Settings.from_environ) and to what the images expect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from process_engine.adapters.observability.tracing import tracing_from_environment
from process_engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# `${NAME:-default}` and `${NAME}` as compose interpolates them from an empty environment.
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
PREFIXED = ("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_", "NOTIFY_CHANNEL_")
OTEL = "OTEL_"  # read by the tracing adapter and the OpenTelemetry SDK, not by Settings


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """Instructions, with continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def engine_environment(compose: dict[str, Any]) -> dict[str, str]:
    environment = compose["services"]["engine"]["environment"]
    return {name: INTERPOLATION.sub(lambda m: m.group(2) or "", str(value)) for name, value in environment.items()}


class RecordingEnviron(Mapping[str, str]):
    """An environment that remembers which names were read."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return self.values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redpanda", "timescaledb", "mosquitto", "engine", "prometheus", "grafana", "jaeger"}
    assert services["jaeger"]["profiles"] == ["tracing"]  # optional: only with --profile tracing
    assert services["redpanda"]["image"].startswith("docker.redpanda.com/redpandadata/redpanda:")
    assert services["timescaledb"]["image"] == "timescale/timescaledb:latest-pg16"
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert services["engine"]["build"] == "." and services["engine"]["command"] == ["run"]


def test_engine_environment_is_what_the_settings_read(compose: dict[str, Any]) -> None:
    environment = engine_environment(compose)
    recording = RecordingEnviron(environment)
    settings = Settings.from_environ(recording)
    unread = {name for name in environment if name not in recording.read and not name.startswith(PREFIXED)}
    tracing = RecordingEnviron(environment)
    assert not tracing_from_environment(tracing).enabled  # off: the endpoint is empty by default
    unread -= {name for name in tracing.read | {"OTEL_SERVICE_NAME"} if name.startswith(OTEL)}
    assert not unread, f"the engine never reads {unread}"
    assert settings.kafka_brokers == "redpanda:9092" and settings.mqtt_url == "mqtt://mosquitto:1883"
    assert settings.database_url == "postgresql://process_engine:process_engine@timescaledb:5432/processes"
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 8080)
    assert str(settings.definitions_path) == "/app/processes"
    assert settings.api_token is None  # an empty PROCESS_ENGINE_API_TOKEN: a read-only API
    assert settings.trace_ui_url == "http://localhost:16686/trace/{trace_id}"  # Jaeger's UI, as published below
    assert "16686:16686" in compose["services"]["jaeger"]["ports"]


def test_engine_reaches_the_services_on_their_internal_listeners(compose: dict[str, Any]) -> None:
    services = compose["services"]
    environment = engine_environment(compose)
    redpanda = " ".join(services["redpanda"]["command"])
    assert "internal://redpanda:9092" in redpanda and "external://localhost:19092" in redpanda
    assert "--smp 1" in redpanda and "--memory 512M" in redpanda
    timescale = services["timescaledb"]["environment"]
    user, database = timescale["POSTGRES_USER"], timescale["POSTGRES_DB"]
    assert f"//{user}:" in environment["DATABASE_URL"] and environment["DATABASE_URL"].endswith(f"@timescaledb:5432/{database}")
    assert services["engine"]["ports"] == ["8080:8080"]


def test_engine_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    depends = services["engine"]["depends_on"]
    assert depends == {name: {"condition": "service_healthy"} for name in ("redpanda", "timescaledb", "mosquitto")}
    for name in depends:
        assert services[name]["healthcheck"]["test"][0] == "CMD-SHELL", name
    # `$$` is compose's escape for a literal `$`: mosquitto_sub must see `$SYS/#`.
    assert "'$$SYS/#'" in services["mosquitto"]["healthcheck"]["test"][1]


def test_volumes_mount_definitions_read_only_and_keep_data(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "./processes:/app/processes:ro" in services["engine"]["volumes"]
    assert "./deploy/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in services["mosquitto"]["volumes"]
    assert "timescaledb-data:/var/lib/postgresql/data" in services["timescaledb"]["volumes"]
    assert "redpanda-data:/var/lib/redpanda/data" in services["redpanda"]["volumes"]
    assert set(compose["volumes"]) == {"redpanda-data", "timescaledb-data", "mosquitto-data", "prometheus-data", "grafana-data"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose["volumes"] or (ROOT / source).exists(), volume


def test_mosquitto_config_listens_for_remote_anonymous_clients() -> None:
    lines = {line.strip() for line in (ROOT / "deploy/mosquitto.conf").read_text().splitlines()}
    assert {"listener 1883", "allow_anonymous true"} <= lines


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck(dockerfile: list[str]) -> None:
    assert dockerfile[0].startswith("FROM python:3.11-slim")
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    healthcheck = next(line for line in dockerfile if line.startswith("HEALTHCHECK "))
    assert "urllib.request" in healthcheck and "/healthz" in healthcheck and "curl" not in healthcheck
    assert 'ENTRYPOINT ["process-engine"]' in dockerfile and 'CMD ["run"]' in dockerfile
    assert "EXPOSE 8080" in dockerfile
    assert any("PROCESS_DEFINITIONS_PATH=/app/processes" in line for line in dockerfile if line.startswith("ENV "))


def test_healthcheck_command_is_valid_python(dockerfile: list[str]) -> None:
    healthcheck = next(line for line in dockerfile if line.startswith("HEALTHCHECK "))
    exec_form = healthcheck[healthcheck.index("CMD ") + 4:]
    program = json.loads(exec_form)
    assert program[:2] == ["python", "-c"]
    compile(program[2], "<healthcheck>", "exec")


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {"pyproject.toml", "README.md", "process_engine", "processes"}.isdisjoint(ignored)
    assert {".git", ".venv", "tests"} <= ignored
