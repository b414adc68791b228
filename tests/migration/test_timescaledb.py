"""TimescaleDB for real: the hypertable and the history policies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from process_engine.adapters.postgres import configure_timescale

ROOT = Path(__file__).resolve().parents[2]
JOBS = """
    SELECT proc_name, job_id, COALESCE(config ->> 'drop_after', config ->> 'compress_after')
    FROM timescaledb_information.jobs WHERE hypertable_name = 'process_history' ORDER BY 1"""


def fetch(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def migrate_command(database_url: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """`process-engine migrate` as a user runs it."""
    environ = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT), **environ}
    return subprocess.run([sys.executable, "-m", "process_engine.cli", "migrate"], env=environ,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_process_history_is_a_hypertable_on_its_timestamp(timescaledb_database_url: str) -> None:
    dimensions = fetch(timescaledb_database_url, "SELECT column_name FROM timescaledb_information.dimensions "
                       "WHERE hypertable_name = 'process_history'")
    assert dimensions == [("timestamp",)]


def test_history_settings_create_change_and_remove_their_jobs(timescaledb_database_url: str) -> None:
    url = timescaledb_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        assert configure_timescale(conn, "90 days", "7 days") is True
        first = fetch(url, JOBS)
        assert [(name, interval) for name, _, interval in first] == [
            ("policy_compression", "7 days"), ("policy_retention", "90 days")]
        assert configure_timescale(conn, "90 days", "7 days") is True
        assert fetch(url, JOBS) == first  # the same settings keep the same jobs
        assert configure_timescale(conn, "30 days", "7 days") is True
        changed = fetch(url, JOBS)
        assert changed[0] == first[0] and changed[1][2] == "30 days"
        assert configure_timescale(conn, None, None) is True
    assert fetch(url, JOBS) == []


def test_migrate_command_creates_the_jobs_its_environment_asks_for(timescaledb_database_url: str) -> None:
    done = migrate_command(timescaledb_database_url, HISTORY_RETENTION="180 days", HISTORY_COMPRESS_AFTER="3 days")
    assert done.returncode == 0, done.stderr
    assert "history retention/compression applied" in done.stdout
    jobs = [(name, interval) for name, _, interval in fetch(timescaledb_database_url, JOBS)]
    assert jobs == [("policy_compression", "3 days"), ("policy_retention", "180 days")]
