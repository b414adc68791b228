"""The views of migration 0003 over history the engine wrote, on TimescaleDB and on plain PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from process_engine.adapters.postgres import MIGRATIONS_DIR
from tests.migration.history_scenario import PlantRun, hours_ago, readme_statements, run_plant

# The migrations that define views and functions; each may be run again.
REPEATABLE = [MIGRATIONS_DIR / "0003_history_views.sql", MIGRATIONS_DIR / "0004_enable_timescaledb.sql"]


def fetch(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


@dataclass
class Plant:
    url: str
    run: PlantRun
    plain: bool


@pytest.fixture(params=["timescaledb", "plain"])
def plant(request: pytest.FixtureRequest) -> Plant:
    """The plant's history in a database on TimescaleDB (skipped when the session's server is plain) or plain PostgreSQL."""
    url = request.getfixturevalue(f"{request.param}_database_url")
    return Plant(url, run_plant(url, hours_ago(3)), request.param == "plain")


def test_activity_stats_count_visits_failures_and_time_spent(plant: Plant) -> None:
    url = plant.url
    stats = fetch(url, """
        SELECT activity_id, visits, failures, timeouts, avg_seconds, max_seconds
        FROM process_activity_stats WHERE definition_id = 'pump-check' ORDER BY activity_id""")
    assert stats == [
        ("check", 1, 0, 0, 0.0, 0.0),
        ("command", 2, 1, 0, 3.5, 5.0),  # took 2 s, and failed after 5 s (on to on_error)
        ("done", 2, 0, 0, 0.0, 0.0),
        ("report", 1, 0, 0, 0.0, 0.0),
        ("settle", 1, 0, 0, 60.0, 60.0),  # the 1-minute timer
        ("start", 2, 0, 0, 0.0, 0.0),
    ]
    cooling = fetch(url, "SELECT visits, max_seconds FROM process_activity_stats "
                    "WHERE definition_id = 'temperature-control' AND activity_id = 'activate_cooling'")
    assert cooling == [(1, 1.0)]  # the waiting timer after it is not a finished visit yet
    assert fetch(url, "SELECT count(*) FROM process_activity_stats WHERE activity_id = 'wait_recheck'") == [(0,)]


def test_activity_visits_start_where_the_instance_began_to_wait(plant: Plant) -> None:
    url, run = plant.url, plant.run
    visits = fetch(url, """
        SELECT activity_id, outcome, started_at, ended_at FROM process_activity_visits
        WHERE instance_id = %s ORDER BY ended_at, activity_id""", (run.failed,))
    t0 = run.t0
    five = t0 + timedelta(seconds=5)
    assert visits == [("start", "completed", t0, t0), ("command", "error_path", t0, five),
                      ("done", "completed", five, five), ("report", "completed", five, five)]


def test_instance_durations_are_null_while_running(plant: Plant) -> None:
    url, run = plant.url, plant.run
    durations = dict(fetch(url, "SELECT instance_id::text, duration_seconds FROM process_instance_durations"))
    assert durations == {run.succeeded: 62.0, run.failed: 5.0, run.cooling: None}
    [row] = fetch(url, "SELECT status, started_at, completed_at FROM process_instance_durations "
                  "WHERE instance_id = %s", (run.succeeded,))
    assert row == ("completed", run.t0, run.t0 + timedelta(seconds=62))


def test_history_hourly_counts_every_row_in_its_hour(plant: Plant) -> None:
    url, run = plant.url, plant.run
    assert fetch(url, "SELECT sum(events)::int FROM process_history_hourly") == [(run.history_rows,)]
    started = fetch(url, """
        SELECT bucket, definition_id, sum(events)::int FROM process_history_hourly
        WHERE event_type = 'started' GROUP BY 1, 2 ORDER BY 2""")
    assert started == [(run.t0, "pump-check", 2), (run.t0, "temperature-control", 1)]
    failed_attempts = fetch(url, "SELECT activity_id, events FROM process_history_hourly "
                            "WHERE event_type = 'action_failed'")
    assert failed_attempts == [("command", 1)]


def test_the_views_migrations_run_again_and_change_nothing(plant: Plant) -> None:
    url = plant.url
    views = ("process_activity_stats", "process_activity_visits", "process_instance_durations", "process_history_hourly")
    before = {view: sorted(fetch(url, f"SELECT * FROM {view}"), key=repr) for view in views}
    with psycopg.connect(url) as conn:
        for path in REPEATABLE:
            conn.execute(path.read_text(encoding="utf-8"))
    assert {view: sorted(fetch(url, f"SELECT * FROM {view}"), key=repr) for view in views} == before
    assert all(before.values())


def test_every_query_of_the_readme_answers(plant: Plant) -> None:
    url, run = plant.url, plant.run
    statements = readme_statements(run.succeeded, plain=plant.plain)
    assert len(statements) == 7
    for statement in statements:
        assert fetch(url, statement), statement
