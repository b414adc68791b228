"""Run real engines against the fixture servers: in-process (Engine) or as `process-engine run` subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from process_engine.adapters.definitions.folder import DefinitionFolder
from process_engine.adapters.postgres.store import PostgresInstanceStore
from process_engine.app import Engine, definition_extensions
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.settings import Settings
from tests.fixtures import wait_until

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ROOT / "processes"


def engine_environ(database_url: str, kafka_bootstrap: str, mqtt_url: str, folder: Path, group: str, **extra: str) -> dict[str, str]:
    """The environment `process-engine run` reads, pointed at the fixture servers."""
    return {
        "DATABASE_URL": database_url,
        "REDPANDA_BROKERS": kafka_bootstrap,
        "PROCESS_ENGINE_GROUP_ID": group,
        "PROCESS_DEFINITIONS_PATH": str(folder),
        "MQTT_URL": mqtt_url,
        "PROCESS_ENGINE_HTTP_ADDR": "127.0.0.1:0",
        **extra,
    }


def engine_settings(database_url: str, kafka_bootstrap: str, mqtt_url: str, folder: Path, group: str, **extra: str) -> Settings:
    """Settings as the environment would give them."""
    return Settings.from_environ(engine_environ(database_url, kafka_bootstrap, mqtt_url, folder, group, **extra))


def unique(prefix: str) -> str:
    """A name (topic, group, MQTT topic level) no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def copy_example(folder: Path, name: str, replace: dict[str, str] | None = None, target: str | None = None) -> Path:
    """Put a shipped example into `folder`, optionally with text replaced (e.g. a shorter timer)."""
    text = (PROCESSES / name).read_text(encoding="utf-8")
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} not in {name}"
        text = text.replace(old, new)
    path = folder / (target or name)
    path.write_text(text, encoding="utf-8")
    return path


def seed_copy(folder: Path, topic: str, timer: str | None = None, correlate: str | None = None, name: str | None = None) -> Path:
    """The seed example on its own topic, with a shorter timer and a correlation key if asked."""
    trigger = f"topic: {topic}" + (f"\n  correlate: {correlate}" if correlate else "")
    replace = {"topic: heatpump-telemetry": trigger}
    if timer is not None:
        replace["duration: 5m"] = f"duration: {timer}"
    return copy_example(folder, "temperature-control.yaml", replace, name)


def telemetry(device: str, temp: Any) -> dict[str, Any]:
    """A heat-pump reading as the seed expects it."""
    return {"measurement": "heatpump", "tags": {"device_id": device}, "fields": {"flow_temp_c": temp}}


@contextmanager
def running_engine(settings: Settings, assigned_timeout: float = 30.0) -> Iterator[Engine]:
    """An in-process engine that has joined its consumer group (or has nothing to consume)."""
    engine = Engine(settings)
    engine.build()
    engine.start()
    try:
        if engine.registry.topics():
            wait_until(lambda: engine.consumer.assigned, assigned_timeout, "the consumer's partition assignment")
        yield engine
    finally:
        engine.stop()


class EngineProcess:
    """`python -m process_engine.cli run` as a child process, its log in a file."""

    def __init__(self, environ: Mapping[str, str], log_path: Path):
        self.environ = dict(environ)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        """Start the process; returns at once (see `wait_for_log`)."""
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_FORMAT": "text", **self.environ}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "process_engine.cli", "run"], cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        """Everything the process logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lines(self, text: str) -> list[str]:
        """Log lines containing `text`."""
        return [line for line in self.log().splitlines() if text in line]

    def wait_for_log(self, text: str, timeout: float = 30.0, count: int = 1) -> list[str]:
        """Poll the log until `count` lines contain `text`; fail with the log's tail."""

        def found() -> list[str]:
            if self.process is not None and self.process.poll() is not None and len(self.lines(text)) < count:
                raise AssertionError(f"engine exited with {self.process.returncode} before logging {text!r}:\n{self.tail()}")
            lines = self.lines(text)
            return lines if len(lines) >= count else []

        try:
            return wait_until(found, timeout, f"{text!r} in the engine log", interval=0.1)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{self.tail()}") from None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the engine runs (and, with trigger topics, holds a partition assignment)."""
        self.wait_for_log("process-engine running", timeout)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit code, waiting up to `timeout` seconds."""
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like a crash or an OOM kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the graceful stop; SIGKILL if it takes longer than `timeout`."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def tail(self, lines: int = 40) -> str:
        """The end of the log, for failure messages."""
        return "\n".join(self.log().splitlines()[-lines:])


@pytest.fixture
def engine_process(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    """Factory: `engine_process(environ)` starts an engine subprocess, stopped after the test."""
    started: list[EngineProcess] = []

    def start(environ: Mapping[str, str], name: str | None = None) -> EngineProcess:
        name = name or f"engine-{len(started) + 1}"
        process = EngineProcess(environ, tmp_path / f"{name}.log").start()
        started.append(process)
        return process

    yield start
    for process in started:  # SIGKILL: fast, and the test database is dropped anyway
        process.kill()


def rows(database_url: str, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run one query against a test database and return its rows as dicts."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.cursor(row_factory=dict_row).execute(sql, params or {}).fetchall()


def scalar(database_url: str, sql: str, params: Mapping[str, Any] | None = None) -> Any:
    """The first column of the first row."""
    found = rows(database_url, sql, params)
    return next(iter(found[0].values())) if found else None


@contextmanager
def side_dispatcher(database_url: str, folder: Path) -> Iterator[Dispatcher]:
    """A dispatcher on the test's side of the database, like `process-engine start` uses."""
    extensions = definition_extensions()
    with PostgresInstanceStore.connect(database_url, min_size=1, max_size=4) as store:
        registry = DefinitionRegistry(store, extensions)
        DefinitionFolder(folder, registry, extensions).scan()
        yield Dispatcher(store, registry)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = 1) -> list[int]:
    """The group's committed offset per partition (negative: nothing committed), without joining it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return [tp.offset for tp in sorted(found, key=lambda tp: tp.partition)]


class TcpRelay:
    """A loopback TCP relay in front of PostgreSQL that a test can cut and restore.

    `cut()` drops every relayed connection and refuses new ones, as a database host
    that went away would; `restore()` accepts again on the same port.
    """

    def __init__(self, database_url: str):
        parts = conninfo_to_dict(database_url)
        self.upstream = (parts.get("host") or "127.0.0.1", int(parts.get("port") or 5432))
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self.port = self._listen(0)
        self.database_url = make_conninfo(database_url, host="127.0.0.1", port=str(self.port))

    def _listen(self, port: int) -> int:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        with self._lock:
            self._listener, self._cut = listener, False
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener.getsockname()[1]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:  # accepted while being cut: drop it like the rest
                    client.close()
                    server.close()
                    return
                self._connections += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            self._cut = True
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
            except OSError:
                pass
            listener.close()
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._listen(self.port)

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cut()


__all__ = [
    "EngineProcess",
    "TcpRelay",
    "committed_offsets",
    "copy_example",
    "engine_environ",
    "engine_process",
    "engine_settings",
    "rows",
    "running_engine",
    "scalar",
    "seed_copy",
    "side_dispatcher",
    "telemetry",
    "unique",
]
