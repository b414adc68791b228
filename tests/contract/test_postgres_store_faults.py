"""PostgreSQL only: a writer killed mid-step, and servers that are down or refuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from process_engine.adapters.postgres import PostgresInstanceStore
from process_engine.adapters.postgres import store as store_module
from process_engine.devstack.servers import free_port
from process_engine.domain.errors import StoreError, StoreUnavailable
from process_engine.domain.instance import InstanceState
from process_engine.engine import RunAction
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


def test_a_claim_commits_without_waiting_for_the_disk_and_leaves_its_connection_as_it_was(database_url: str) -> None:
    with PostgresInstanceStore.connect(database_url, max_size=1) as store, psycopg.connect(database_url, autocommit=True) as other:
        store.save_definition(StoredDefinition("flow", 0, "Flow", {}, "hash-1"))
        state = InstanceState(str(uuid.uuid4()), "flow", 1, started_at=T0)
        store.commit([Step(state, None, (RunAction(f"{state.id}:notify:1", "t1", "notify", "log", {}, 1),))])
        with store._connection() as conn:  # the pool's one connection, durable for every other statement
            conn.execute("SET synchronous_commit = on")
        assert [a.idempotency_key for a in store.claim_actions(T0, 10, 30)] == [f"{state.id}:notify:1"]
        leased = other.execute("SELECT claimed_until FROM process_outbox WHERE instance_id = %s", (state.id,)).fetchone()
        assert leased == (T0 + timedelta(seconds=30),)  # committed: another session sees the lease
        with store._connection() as conn:  # SET LOCAL ended with the claim
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
            assert conn.info.transaction_status == TransactionStatus.IDLE
        with pytest.raises(StoreError, match="claiming outbox actions"):
            store.claim_actions(T0, -1, 30)  # LIMIT -1: the server refuses the claim
        with store._connection() as conn:
            assert conn.info.transaction_status == TransactionStatus.IDLE  # rolled back, ready for the next caller
        assert store.claim_actions(T0 + timedelta(seconds=30), 10, 30)[0].instance_id == state.id


def test_a_claim_runs_with_synchronous_commit_off_inside_its_own_transaction(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with PostgresInstanceStore.connect(database_url, max_size=1) as store:
        with store._connection() as conn:
            conn.execute("SET synchronous_commit = on")
        # The claim's statement swapped for one that reports the session's setting where the claim would run.
        monkeypatch.setattr(store_module, "query", lambda name: "SELECT current_setting('synchronous_commit') AS setting")
        # off although the session says on: SET LOCAL took, which it does only inside a transaction block
        assert store._leased("claiming", "claim_actions", {}) == [{"setting": "off"}]
