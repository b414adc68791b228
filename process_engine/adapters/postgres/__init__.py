"""The PostgreSQL adapter: instance store, migrations and TimescaleDB policies."""

from process_engine.adapters.postgres.migrations import MIGRATIONS_DIR, migrate
from process_engine.adapters.postgres.store import PostgresInstanceStore
from process_engine.adapters.postgres.timescale import configure_history, configure_timescale

__all__ = ["MIGRATIONS_DIR", "PostgresInstanceStore", "configure_history", "configure_timescale", "migrate"]
