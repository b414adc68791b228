"""Run a real Engine in-process against the fixture servers, on a folder of definitions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from process_engine.app import Engine
from process_engine.settings import Settings
from tests.fixtures import wait_until

PROCESSES = Path(__file__).resolve().parents[2] / "processes"


def engine_settings(database_url: str, kafka_bootstrap: str, mqtt_url: str, folder: Path, group: str, **extra: str) -> Settings:
    """Settings as the environment would give them."""
    environ = {
        "DATABASE_URL": database_url,
        "REDPANDA_BROKERS": kafka_bootstrap,
        "PROCESS_ENGINE_GROUP_ID": group,
        "PROCESS_DEFINITIONS_PATH": str(folder),
        "MQTT_URL": mqtt_url,
        "PROCESS_ENGINE_HTTP_ADDR": "127.0.0.1:0",
        **extra,
    }
    return Settings.from_environ(environ)


def copy_example(folder: Path, name: str, replace: dict[str, str] | None = None) -> Path:
    """Put a shipped example into `folder`, optionally with text replaced (e.g. a shorter timer)."""
    text = (PROCESSES / name).read_text(encoding="utf-8")
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} not in {name}"
        text = text.replace(old, new)
    target = folder / name
    target.write_text(text, encoding="utf-8")
    return target


@contextmanager
def running_engine(settings: Settings, assigned_timeout: float = 30.0) -> Iterator[Engine]:
    """An engine that has joined its consumer group (or has nothing to consume)."""
    engine = Engine(settings)
    engine.build()
    engine.start()
    try:
        if engine.registry.topics():
            wait_until(lambda: engine.consumer.assigned, assigned_timeout, "the consumer's partition assignment")
        yield engine
    finally:
        engine.stop()


__all__ = ["copy_example", "engine_settings", "running_engine"]
