"""Migrations tested by their effect on a real database, and the tables as SQL users see them."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from process_engine.adapters.postgres import (
    MIGRATIONS_DIR,
    PostgresInstanceStore,
    configure_timescale,
    migrate,
)
from process_engine.adapters.postgres.migrations import MIGRATION_LOCK_KEY
from process_engine.domain.errors import StoreError
from process_engine.domain.instance import InstanceState, Token
from process_engine.engine.commands import RecordHistory
from process_engine.ports import Step, StoredDefinition
from tests.fixtures import wait_until

ROOT = Path(__file__).resolve().parents[2]

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
ALL_MIGRATIONS = sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))
EXPECTED_COLUMNS = {
    "process_definitions": {"id", "version", "name", "definition", "content_hash", "created_at"},
    "process_instances": {
        "id", "definition_id", "definition_version", "status", "variables", "current_activity",
        "started_at", "completed_at", "state", "version", "correlation_key", "error", "updated_at",
    },
    "process_history": {
        "id", "instance_id", "activity_id", "event_type", "timestamp", "data", "message",
        "correlation_id", "causation_id",
    },
    "process_timers": {
        "id", "instance_id", "token_id", "activity_id", "kind", "due_at", "claimed_until",
        "created_at",
    },
    "process_outbox": {
        "idempotency_key", "instance_id", "token_id", "activity_id", "action", "config",
        "attempt", "created_at", "available_at", "claimed_until",
    },
    "trigger_ledger": {"topic", "partition", "offset", "definition_id", "instance_id", "created_at"},
    "dead_letters": {
        "id", "topic", "partition", "offset", "reason", "payload", "key", "definition_id",
        "created_at",
    },
    "schema_migrations": {"name", "applied_at"},
}
SCHEMA_SNAPSHOT = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default "
    "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "constraints": "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE connamespace = 'public'::regnamespace ORDER BY 1",
    "ledger": "SELECT name, applied_at FROM schema_migrations ORDER BY 1",
}


def fetch(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of one query, the way a psql user would run it."""
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """What a migration run could change."""
    return {name: fetch(url, sql) for name, sql in SCHEMA_SNAPSHOT.items()}


def test_packaged_and_repository_migrations_are_the_same_files() -> None:
    assert ALL_MIGRATIONS[0] == "0001_initial.sql"
    assert REPO_MIGRATIONS.resolve() == MIGRATIONS_DIR.resolve()


def test_fresh_database_gets_every_table_column_and_key(empty_database_url: str) -> None:
    assert migrate(empty_database_url) == ALL_MIGRATIONS
    columns: dict[str, set[str]] = {}
    listing = "SELECT table_name, column_name FROM information_schema.columns"
    for table, column in fetch(empty_database_url, listing + " WHERE table_schema = 'public'"):
        columns.setdefault(table, set()).add(column)
    for table, expected in EXPECTED_COLUMNS.items():
        assert expected <= columns.get(table, set()), table
    history_key = fetch(empty_database_url, """
        SELECT a.attname FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = 'process_history'::regclass AND i.indisprimary""")
    assert {name for (name,) in history_key} == {"timestamp", "id"}
    assert fetch(empty_database_url, "SELECT name FROM schema_migrations") == [
        (name,) for name in ALL_MIGRATIONS
    ]


def test_status_check_admits_cancelled_and_refuses_unknown(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO process_definitions (id, name, definition, content_hash) "
                     "VALUES ('d', 'D', '{}', 'h')")
        insert = ("INSERT INTO process_instances (definition_id, definition_version, status) "
                  "VALUES ('d', 1, %s)")
        for status in ("running", "completed", "failed", "suspended", "cancelled"):
            conn.execute(insert, (status,))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(insert, ("exploded",))


def test_second_run_applies_nothing_and_changes_nothing(empty_database_url: str) -> None:
    migrate(empty_database_url)
    before = snapshot(empty_database_url)
    assert migrate(empty_database_url) == []
    assert snapshot(empty_database_url) == before


def test_concurrent_runs_apply_each_migration_once(empty_database_url: str) -> None:
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(empty_database_url))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results) == [[], ALL_MIGRATIONS]
    counts = fetch(empty_database_url, "SELECT name, count(*) FROM schema_migrations GROUP BY name")
    assert sorted(counts) == [(name, 1) for name in ALL_MIGRATIONS]


def test_migrate_waits_for_the_advisory_lock(empty_database_url: str) -> None:
    results: list[list[str]] = []
    with psycopg.connect(empty_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        runner = threading.Thread(target=lambda: results.append(migrate(empty_database_url)))
        runner.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        wait_until(lambda: holder.execute(waiting).fetchone()[0] == 1, 30, "migrate to block")
        assert holder.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        runner.join(timeout=60)
    assert results == [ALL_MIGRATIONS]


def test_a_failing_migration_rolls_back_and_stops(empty_database_url: str, tmp_path: Path) -> None:
    shutil.copy(MIGRATIONS_DIR / "0001_initial.sql", tmp_path)
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half_done (id INT);\nSELECT nonsense;\n")
    (tmp_path / "0003_later.sql").write_text("CREATE TABLE later (id INT);\n")
    with pytest.raises(StoreError, match="0002_broken.sql"):
        migrate(empty_database_url, tmp_path)
    assert fetch(empty_database_url, "SELECT name FROM schema_migrations") == [("0001_initial.sql",)]
    assert fetch(empty_database_url, "SELECT to_regclass('half_done'), to_regclass('later')") == [
        (None, None)
    ]


def test_configure_timescale_without_timescaledb_is_a_logged_noop(
    plain_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="process_engine")
    with psycopg.connect(plain_database_url) as conn:
        assert configure_timescale(conn, "30 days", None) is False
    assert "timescaledb is not installed" in caplog.text


def test_a_sql_user_reads_an_instance_story_in_time_order(database_url: str) -> None:
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
    state = InstanceState(str(uuid.uuid4()), "temperature-control", 1, variables={"temperature": 27.5},
                          tokens=(Token("t1", "wait_recheck", waiting="timer"),), started_at=t0)
    first = (RecordHistory("start", "started", t0, {"temperature": 27.5}),
             RecordHistory("check_temp", "completed", t0, {"result": True}),
             RecordHistory("wait_recheck", "timer_started", t0 + timedelta(seconds=1)))
    last = (RecordHistory("recheck_temp", "completed", t0 + timedelta(minutes=5)),
            RecordHistory("end", "completed", t0 + timedelta(minutes=5), None, "Cooling successful"))
    with PostgresInstanceStore.connect(database_url) as store:
        store.save_definition(StoredDefinition("temperature-control", 0, "T", {}, "h"))
        store.commit([Step(state, None, first, correlation_id="heatpump-telemetry/0/7")])
        done = state.with_changes(status="completed", tokens=(), completed_at=t0 + timedelta(minutes=5))
        store.commit([Step(done, 1, last, causation_id="timer:wait_recheck")])
    story = fetch(database_url, """
        SELECT h.timestamp, h.activity_id, h.event_type, h.message, h.data, i.status
        FROM process_history h JOIN process_instances i ON i.id = h.instance_id
        WHERE i.id = %s ORDER BY h.timestamp, h.id""", (state.id,))
    assert [(row[1], row[2]) for row in story] == [
        ("start", "started"), ("check_temp", "completed"), ("wait_recheck", "timer_started"),
        ("recheck_temp", "completed"), ("end", "completed"),
    ]
    assert story[0][4] == {"temperature": 27.5} and story[-1][3] == "Cooling successful"
    assert [row[0] for row in story] == sorted(row[0] for row in story)
    assert {row[5] for row in story} == {"completed"}
    row = fetch(database_url, "SELECT status, current_activity, variables, completed_at "
                "FROM process_instances WHERE id = %s", (state.id,))
    assert row == [("completed", None, {"temperature": 27.5}, t0 + timedelta(minutes=5))]


def test_migrate_command_reports_history_policies_skipped_without_timescaledb(plain_database_url: str) -> None:
    environ = {**os.environ, "DATABASE_URL": plain_database_url, "HISTORY_RETENTION": "90 days", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "process_engine.cli", "migrate"], env=environ, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "(up to date)" in done.stdout
    assert "history retention/compression skipped: TimescaleDB is not in use" in done.stdout
