"""PostgreSQL only: a writer killed mid-step, and servers that are down or refuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from process_engine.adapters.postgres import PostgresInstanceStore
from process_engine.devstack.servers import free_port
from process_engine.domain.errors import StoreUnavailable
from process_engine.domain.instance import InstanceState
from process_engine.ports import Step, StoredDefinition
from tests.fixtures.postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)

KILLED_WRITER = """
import sys
import psycopg
from process_engine.adapters.postgres.batch import batch_statements
from process_engine.runtime.commit_plan import plan_commit
from process_engine.domain.instance import InstanceState
from process_engine.engine.commands import RecordHistory, ScheduleTimer
from process_engine.ports import Step
from datetime import datetime, timezone

url, instance_id = sys.argv[1:]
now = datetime.now(timezone.utc)
state = InstanceState(instance_id, "flow", 1, started_at=now)
commands = (ScheduleTimer("tm-killed", "t1", "w", now, "timer"), RecordHistory("s", "started", now))
statements = batch_statements(plan_commit([Step(state, None, commands)]))
conn = psycopg.connect(url)  # not autocommit: one open transaction
for sql, params in statements[:2]:  # the instance row and its timer; history not yet
    conn.execute(sql, params)
print("written", flush=True)
sys.stdin.read()  # wait to be killed
"""


def test_a_writer_killed_mid_step_leaves_nothing(database_url: str) -> None:
    with PostgresInstanceStore.connect(database_url) as store:
        store.save_definition(StoredDefinition("flow", 0, "Flow", {}, "hash-1"))
        instance_id = str(uuid.uuid4())
        path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        command = [sys.executable, "-c", KILLED_WRITER, database_url, instance_id]
        with subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as writer:
            line = writer.stdout.readline()
            assert line == "written\n", writer.stderr.read()
            assert store.load(instance_id) is None  # uncommitted: invisible meanwhile
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
        assert store.load(instance_id) is None and store.history(instance_id) == []
        assert store.claim_due_timers(datetime.now(timezone.utc), 10, 30) == []
        # The server rolled the dead transaction back: the same id can now be written.
        store.commit([Step(InstanceState(instance_id, "flow", 1, started_at=T0), None)])
        assert store.load(instance_id).version == 1


def test_unreachable_server_is_store_unavailable() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    with pytest.raises(StoreUnavailable, match="127.0.0.1"):
        PostgresInstanceStore.connect(url, timeout=1.0)


def test_connect_failure_names_the_reason(postgres_server: PostgresServer) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        PostgresInstanceStore.connect(postgres_server.url("no_such_database"), timeout=1.0)
