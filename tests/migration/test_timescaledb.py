"""TimescaleDB for real: the hypertable, the history policies, compression, the continuous aggregate,
and a server that has the extension installed but not preloaded."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from process_engine.adapters.postgres import MIGRATIONS_DIR, PostgresInstanceStore, configure_timescale, migrate
from tests.fixtures.postgres import LocalPostgres, PostgresServer, is_hypertable
from tests.fixtures.timescaledb import installed_bin_dir
from tests.migration.history_scenario import hours_ago, readme_statements, run_plant

ROOT = Path(__file__).resolve().parents[2]
ALL_MIGRATIONS = sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))
VIEWS = ("process_activity_stats", "process_activity_visits", "process_instance_durations", "process_history_hourly")
JOBS = """
    SELECT proc_name, job_id, COALESCE(config ->> 'drop_after', config ->> 'compress_after')
    FROM timescaledb_information.jobs WHERE hypertable_name = 'process_history' ORDER BY 1"""
HOURLY_TOTAL = "SELECT COALESCE(sum(events), 0)::int FROM process_history_hourly"


def fetch(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def migrate_command(database_url: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """`process-engine migrate` as a user runs it."""
    environ = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT), **environ}
    return subprocess.run([sys.executable, "-m", "process_engine.cli", "migrate"], env=environ,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


# -- on TimescaleDB ---------------------------------------------------------------

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


def test_history_hourly_is_a_continuous_aggregate_its_policy_materializes(timescaledb_database_url: str) -> None:
    url = timescaledb_database_url
    run = run_plant(url, hours_ago(3))
    [(realtime_only, materialized)] = fetch(url, """
        SELECT materialized_only, format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
        FROM timescaledb_information.continuous_aggregates WHERE view_name = 'process_history_hourly'""")
    [(job, offsets)] = fetch(url, """
        SELECT job_id, format('%s..%s', config ->> 'start_offset', config ->> 'end_offset')
        FROM timescaledb_information.jobs
        WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = 'process_history_hourly'""")
    assert realtime_only is False and offsets == "2 days..01:00:00"
    count_materialized = f"SELECT count(*) FROM {materialized}"
    assert fetch(url, count_materialized) == [(0,)]
    assert fetch(url, HOURLY_TOTAL) == [(run.history_rows,)]  # real time: before any refresh
    with psycopg.connect(url, autocommit=True) as conn:  # what the scheduler does every 30 minutes
        conn.execute("CALL run_job(%s)", (job,))
    assert fetch(url, count_materialized)[0][0] > 0
    assert fetch(url, HOURLY_TOTAL) == [(run.history_rows,)]  # materialized now, counted once


def test_compressed_chunks_answer_the_readme_and_the_store_unchanged(timescaledb_database_url: str) -> None:
    url = timescaledb_database_url
    run = run_plant(url, hours_ago(3))
    statements = readme_statements(run.succeeded) + [f"SELECT * FROM {view}" for view in VIEWS]
    before = [sorted(fetch(url, statement), key=repr) for statement in statements]
    with PostgresInstanceStore.connect(url, min_size=1, max_size=1) as store:
        story = store.history(run.succeeded)
    with psycopg.connect(url, autocommit=True) as conn:
        configure_timescale(conn, None, "7 days")  # turns compression on for the table
        compressed = conn.execute("SELECT compress_chunk(chunk) FROM show_chunks('process_history') AS chunk").fetchall()
    assert compressed
    chunks = fetch(url, "SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = 'process_history'")
    assert chunks and all(is_compressed for (is_compressed,) in chunks)
    assert [sorted(fetch(url, statement), key=repr) for statement in statements] == before
    assert all(before)
    with PostgresInstanceStore.connect(url, min_size=1, max_size=1) as store:
        assert store.history(run.succeeded) == story


# -- installed but not preloaded ---------------------------------------------------

@pytest.fixture
def unpreloaded_database_url(unpreloaded_postgres: PostgresServer) -> Iterator[str]:
    name = unpreloaded_postgres.create_database()
    try:
        yield unpreloaded_postgres.url(name)
    finally:
        unpreloaded_postgres.drop_database(name)


def test_not_preloaded_migrates_plain_tables_and_logs_one_line_on_enabling(
    unpreloaded_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = unpreloaded_database_url
    caplog.set_level(logging.WARNING, logger="process_engine")
    assert migrate(url) == ALL_MIGRATIONS
    [line] = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert "timescaledb is installed but not in shared_preload_libraries" in line
    assert "SELECT process_engine_enable_timescaledb();" in line
    assert fetch(url, "SELECT extname FROM pg_extension WHERE extname = 'timescaledb'") == []
    run = run_plant(url, hours_ago(3))
    assert fetch(url, HOURLY_TOTAL) == [(run.history_rows,)]  # the plain view of the same name


def test_migrate_command_on_a_server_without_the_preload_succeeds_with_that_line(unpreloaded_database_url: str) -> None:
    done = migrate_command(unpreloaded_database_url)
    assert done.returncode == 0, done.stderr
    assert f"applied {len(ALL_MIGRATIONS)} migration(s)" in done.stdout
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "postgres: timescaledb is installed but not in shared_preload_libraries, so process_history stays a plain "
        "table; to use TimescaleDB add timescaledb to shared_preload_libraries in postgresql.conf, restart "
        "PostgreSQL and run SELECT process_engine_enable_timescaledb(); in this database"
    ]


def test_following_the_line_converts_the_database_and_keeps_its_history() -> None:
    server = LocalPostgres(installed_bin_dir(), timescaledb=False)
    try:
        postgres = PostgresServer(server.start())
        url = postgres.url(postgres.create_database())
        migrate(url)
        run = run_plant(url, hours_ago(3))
        with pytest.raises(psycopg.errors.RaiseException, match="not in shared_preload_libraries"):
            fetch(url, "SELECT process_engine_enable_timescaledb()")  # an error, not a lost connection
        server.preload_timescaledb()
        assert fetch(url, "SELECT process_engine_enable_timescaledb()") == [("continuous aggregate",)]
        assert is_hypertable(url)
        assert fetch(url, HOURLY_TOTAL) == [(run.history_rows,)]
        assert len(fetch(url, "SELECT * FROM process_history WHERE instance_id = %s", (run.succeeded,))) == 9
        assert fetch(url, "SELECT process_engine_enable_timescaledb()") == [("exists",)]
        assert migrate(url) == []
    finally:
        server.stop()


def owned_database(server: PostgresServer, role: str) -> str:
    """A database owned by `role` (created if need be); returns its URL as that role."""
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        name = f"{role}_{uuid.uuid4().hex[:6]}"
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(role)))
    return make_conninfo(server.url(name), user=role)


def drop_owned(server: PostgresServer, role: str, urls: list[str]) -> None:
    for url in urls:
        server.drop_database(conninfo_to_dict(url)["dbname"])
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_an_owner_who_may_not_read_the_preload_list_gets_the_same_choice(
    unpreloaded_postgres: PostgresServer, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    owner = f"pe_owner_{uuid.uuid4().hex[:8]}"  # owns its database, no superuser: as on a managed PostgreSQL
    caplog.set_level(logging.WARNING, logger="process_engine")
    plain = owned_database(unpreloaded_postgres, owner)
    servers = [(unpreloaded_postgres, [plain])]
    try:
        assert migrate(plain) == ALL_MIGRATIONS
        assert not is_hypertable(plain) and "not in shared_preload_libraries" in caplog.text
        if postgres_server.timescaledb is not None:  # and where it is preloaded, a hypertable
            preloaded = owned_database(postgres_server, owner)
            servers.append((postgres_server, [preloaded]))
            assert migrate(preloaded) == ALL_MIGRATIONS
            assert is_hypertable(preloaded)
    finally:
        for server, urls in servers:
            drop_owned(server, owner, urls)
