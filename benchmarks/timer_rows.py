"""T3's pending timers: instances waiting on their timer, written straight to PostgreSQL with COPY.

The rows are what the walker itself produces for `bench-wait` (one instance advanced
for real, then copied with fresh ids), so the engine fires them like its own.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from process_engine.adapters.definitions.yaml_loader import load_file
from process_engine.app import definition_extensions
from process_engine.engine import Start, advance
from process_engine.engine.commands import ScheduleTimer
from process_engine.runtime.commit_plan import to_json_text

INSTANCE_COPY = (
    "COPY process_instances (id, definition_id, definition_version, status, variables, state,"
    " current_activity, correlation_key, started_at, version) FROM STDIN"
)
TIMER_COPY = "COPY process_timers (id, instance_id, token_id, activity_id, kind, due_at) FROM STDIN"


def insert_pending_timers(
    database_url: str, definition_file: Path, count: int, due_soon: int, lead: float, window: float
) -> dict[str, datetime]:
    """`count` waiting instances with a timer each; `due_soon` of them due evenly over `window` s.

    The first is due `lead` seconds after the rows are in (they go in last, so the
    time the other rows take to write does not make them late). Returns the due time
    of each timer due within the window, by timer id.
    """
    with psycopg.connect(database_url) as conn:
        version = conn.execute("SELECT max(version) FROM process_definitions WHERE id = 'bench-wait'").fetchone()[0]
        definition = replace(load_file(definition_file, definition_extensions()), version=version)
        now = datetime.now(timezone.utc)
        template = str(uuid.uuid4())
        state, commands = advance(definition, None, Start(template, {}, None, "x"), now)
        [timer] = [c for c in commands if isinstance(c, ScheduleTimer)]
        state_text = to_json_text(state.to_json(), "state")
        instances, timers = [], []
        for number in range(count):
            instance_id = str(uuid.uuid4())
            device = f"timer-{number}"
            variables = to_json_text({"device_id": device, "temperature": 27.0}, "variables")
            instances.append((instance_id, definition.id, version, "running", variables,
                              state_text.replace(template, instance_id), state.current_activity, device, now, 1))
            timers.append([timer.timer_id.replace(template, instance_id), instance_id, timer.token_id,
                           timer.activity_id, timer.kind, now + timedelta(days=1, milliseconds=number)])
        _copy(conn, INSTANCE_COPY, instances)
        _copy(conn, TIMER_COPY, timers[due_soon:])
        # As after any bulk load: otherwise autovacuum analyzes the new rows mid-window.
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE process_instances, process_timers")
        conn.autocommit = False
        first_due = datetime.now(timezone.utc) + timedelta(seconds=lead)
        for number, row in enumerate(timers[:due_soon]):
            row[5] = first_due + timedelta(seconds=window * number / due_soon)
        _copy(conn, TIMER_COPY, timers[:due_soon])
    return {row[0]: row[5] for row in timers[:due_soon]}


def _copy(conn: psycopg.Connection, statement: str, rows: list) -> None:
    """COPY the rows and commit."""
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
    conn.commit()
