"""The benchmark's servers: the same PostgreSQL, Tansu and Mosquitto the tests start."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from process_engine.adapters.postgres import migrate
from process_engine.devstack.servers import KafkaBroker, MqttBroker
from tests.fixtures.kafka import create_topic
from tests.fixtures.postgres import LocalPostgres, PostgresServer, find_bin_dir


# The tests run PostgreSQL with fsync off; the benchmark measures what production
# pays: fsync on, and the server's default synchronous_commit (on) unless a phase
# sets it per connection (S3 measures both).
DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}


@dataclass
class Stack:
    """PostgreSQL, a Kafka-compatible broker and an MQTT broker on loopback ports."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="process-engine-bench-")))
    postgres: LocalPostgres | None = None
    server: PostgresServer | None = None
    kafka: KafkaBroker | None = None
    mqtt: MqttBroker | None = None

    def start(self) -> Stack:
        """Start all three; stop what started if one fails."""
        try:
            bin_dir = find_bin_dir()
            if bin_dir is None:
                raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
            self.postgres = LocalPostgres(bin_dir, settings=DURABLE)
            self.server = PostgresServer(self.postgres.start(), prefix="bench")
            self.kafka = KafkaBroker(self.workdir).start()
            self.mqtt = MqttBroker(self.workdir).start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def bootstrap(self) -> str:
        """The Kafka bootstrap address."""
        assert self.kafka is not None
        return self.kafka.bootstrap

    @property
    def mqtt_url(self) -> str:
        """The MQTT broker URL."""
        assert self.mqtt is not None
        return self.mqtt.url

    @property
    def postgres_pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        assert self.postgres is not None
        return int((self.postgres.data / "postmaster.pid").read_text().split()[0])

    @property
    def broker_pid(self) -> int:
        """The Kafka-compatible broker's process id."""
        assert self.kafka is not None and self.kafka.process is not None
        return self.kafka.process.pid

    def database(self) -> str:
        """A fresh migrated database; returns its URL."""
        assert self.server is not None
        url = self.server.url(self.server.create_database())
        migrate(url)
        return url

    def topic(self, name: str, partitions: int) -> str:
        """Create a topic and wait until its partitions show."""
        return create_topic(self.bootstrap, name, partitions)

    def stop(self) -> None:
        """Stop every server and remove the work directory."""
        for stop in (self.mqtt, self.kafka, self.postgres):
            if stop is not None:
                try:
                    stop.stop()
                except Exception:  # teardown goes on: the other servers still need stopping
                    pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def execute(url: str, statement: str) -> list[tuple]:
    """Run one statement on its own autocommitted connection; its rows if it has any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description is not None else []
