"""The quick-look commands: `start`, `instances`, `history`, against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT),
               "PROCESS_DEFINITIONS_PATH": str(ROOT / "processes"), "MQTT_URL": ""}
    return subprocess.run([sys.executable, "-m", "process_engine.cli", *args], env=environ, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_start_then_list_then_read_the_history(database_url: str) -> None:
    started = cli(database_url, "start", "temperature-control", "--var", "device_id=hp-7", "--var", "temperature=21.5")
    assert started.returncode == 0, started.stderr
    instance_id = started.stdout.split()[1]
    assert "completed" in started.stdout  # a normal reading logs (inline) and ends

    listed = cli(database_url, "instances", "--definition", "temperature-control")
    assert listed.returncode == 0 and instance_id in listed.stdout and "completed" in listed.stdout

    history = cli(database_url, "history", instance_id)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].startswith(f"{instance_id} temperature-control v1: completed")
    activities = [line.split()[1] for line in lines[1:]]
    assert activities[:2] == ["start", "start"] and "log_normal" in activities and "end" in activities


def test_bad_input_is_one_clear_line(database_url: str) -> None:
    unknown = cli(database_url, "start", "no-such-process")
    assert unknown.returncode == 1 and "no definition 'no-such-process'" in unknown.stderr
    bad_var = cli(database_url, "start", "temperature-control", "--var", "oops")
    assert bad_var.returncode == 1 and "--var needs name=value" in bad_var.stderr
    missing = cli(database_url, "history", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1 and "no instance" in missing.stderr
    assert "Traceback" not in unknown.stderr + bad_var.stderr + missing.stderr
