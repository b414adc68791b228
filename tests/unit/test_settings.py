"""Start-up settings: every missing or malformed one stops start-up with one clear line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from process_engine.domain.errors import ConfigError
from process_engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"DATABASE_URL": "postgresql://pe:pe@localhost:5432/processes"}


def settings(**environ: str) -> Settings:
    return Settings.from_environ({**GOOD, **environ})


def test_defaults_and_values_from_the_environment() -> None:
    defaults = settings()
    assert (defaults.kafka_brokers, defaults.group_id, defaults.http_host, defaults.http_port) == ("localhost:9092", "process-engine", "0.0.0.0", 8080)
    assert defaults.mqtt_url == "mqtt://localhost:1883" and defaults.api_token is None
    given = settings(
        KAFKA_BOOTSTRAP_SERVERS="k1:9092,k2:9092",
        PROCESS_ENGINE_HTTP_ADDR="127.0.0.1:0",
        PROCESS_ENGINE_API_TOKEN="t0ken",
        LOG_LEVEL="debug",
        LOG_FORMAT="JSON",
        MQTT_URL="",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
    )
    assert given.kafka_brokers == "k1:9092,k2:9092" and (given.http_host, given.http_port) == ("127.0.0.1", 0)
    assert (given.api_token, given.log_level, given.log_format) == ("t0ken", "DEBUG", "json")
    assert given.mqtt_url is None  # empty turns MQTT off
    assert given.kafka_security == {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    assert defaults.http_action_allow is None
    assert settings(HTTP_ACTION_ALLOW=" printer.lan,10.0.0.0/8 ").http_action_allow == "printer.lan,10.0.0.0/8"
    assert defaults.trace_ui_url is None
    assert settings(TRACE_UI_URL="https://tempo.lan/explore?trace={trace_id}").trace_ui_url == "https://tempo.lan/explore?trace={trace_id}"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://db/processes"}, "DATABASE_URL"),
        ({"REDPANDA_BROKERS": "localhost"}, "REDPANDA_BROKERS"),
        ({"REDPANDA_BROKERS": "k1:9092,k2:port"}, "REDPANDA_BROKERS"),
        ({"PROCESS_ENGINE_HTTP_ADDR": "8080"}, "PROCESS_ENGINE_HTTP_ADDR"),
        ({"PROCESS_ENGINE_HTTP_ADDR": "0.0.0.0:99999"}, "PROCESS_ENGINE_HTTP_ADDR"),
        ({"PROCESS_ENGINE_HTTP_ADDR": "0.0.0.0:http"}, "PROCESS_ENGINE_HTTP_ADDR"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"MQTT_URL": "tcp://localhost:1883"}, "MQTT_URL"),
        ({"MQTT_URL": "mqtt://:1883"}, "MQTT_URL"),
        ({"MQTT_URL": "mqtt://broker:port"}, "MQTT_URL"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohost"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"PROCESS_ENGINE_BATCH_SIZE": "0"}, "PROCESS_ENGINE_BATCH_SIZE"),
        ({"HTTP_ACTION_ALLOW": "10.0.0.0/33"}, "HTTP_ACTION_ALLOW"),
        ({"HTTP_ACTION_ALLOW": "printer.lan,http://x"}, "HTTP_ACTION_ALLOW"),
        ({"TRACE_UI_URL": "http://localhost:16686/trace/"}, "TRACE_UI_URL"),
        ({"TRACE_UI_URL": "javascript:alert(1)//{trace_id}"}, "TRACE_UI_URL"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings(**environ)
    message = str(raised.value)
    assert message.startswith(named) and "\n" not in message


def test_missing_database_url_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError, match=r"DATABASE_URL is not set \(e.g. DATABASE_URL=postgresql://"):
        Settings.from_environ({})


def run_console_script(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`process-engine run` (the console script's entry point) with exactly these settings."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    env = {**keep, "PYTHONPATH": str(ROOT), **environ}
    return subprocess.run(
        [sys.executable, "-m", "process_engine.cli", "run"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "DATABASE_URL"),
        ({**GOOD, "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({**GOOD, "REDPANDA_BROKERS": "nohostport"}, "REDPANDA_BROKERS"),
        ({**GOOD, "MQTT_URL": "http://broker"}, "MQTT_URL"),
        ({**GOOD, "HTTP_ACTION_ALLOW": "192.168.0.0/99"}, "HTTP_ACTION_ALLOW"),
    ],
)
def test_run_with_a_bad_setting_exits_non_zero_with_one_line(environ: dict[str, str], named: str) -> None:
    done = run_console_script(environ)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named}"), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
