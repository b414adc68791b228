"""Applies the SQL files of `migrations/` in name order, once each, under an advisory lock."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from process_engine.adapters.postgres.errors import translated
from process_engine.adapters.postgres.queries import query

log = logging.getLogger(__name__)

# The packaged copy; the repository's top-level `migrations/` links to this folder.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# pg_advisory_lock key held while migrating, so replicas starting together take turns.
MIGRATION_LOCK_KEY = 0x7072_6F63_6573_7345  # "processE"


def migration_files(directory: Path | None = None) -> list[Path]:
    """The migration files of `directory` (default: the packaged ones), in name order."""
    folder = directory or MIGRATIONS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"migrations folder {folder} does not exist")
    return sorted(folder.glob("*.sql"), key=lambda path: path.name)


def migrate(conninfo: str, directory: Path | None = None) -> list[str]:
    """Apply every migration not yet in `schema_migrations`; each in its own transaction.

    Args:
        conninfo: libpq connection string or URL of the target database.
        directory: folder of `NNNN_name.sql` files; the packaged migrations by default.

    Returns:
        The names of the files applied by this call (empty when already up to date).

    Raises:
        StoreUnavailable: the database cannot be reached.
        StoreError: a migration failed; it is rolled back and later ones are not tried.
    """
    files = migration_files(directory)
    with translated("connecting to PostgreSQL to migrate"):
        conn = psycopg.connect(conninfo, autocommit=True)
    with conn:
        conn.add_notice_handler(_log_notice)
        with translated("taking the migration lock"):
            conn.execute(query("migrations_lock"), {"key": MIGRATION_LOCK_KEY})
        try:
            return _apply_pending(conn, files)
        finally:
            if not conn.closed:
                conn.execute(query("migrations_unlock"), {"key": MIGRATION_LOCK_KEY})


def _apply_pending(conn: psycopg.Connection, files: list[Path]) -> list[str]:
    """Apply the files the ledger does not list yet; return their names."""
    with translated("reading schema_migrations"):
        conn.execute(query("migrations_ledger"))
        done = {row[0] for row in conn.execute(query("migrations_applied"))}
    applied = []
    for path in files:
        if path.name in done:
            continue
        with translated(f"applying migration {path.name}"), conn.transaction():
            # No parameters: psycopg sends the file as one multi-statement query.
            conn.execute(path.read_text(encoding="utf-8"))
            conn.execute(query("migrations_record"), {"name": path.name})
        log.info("applied migration %s", path.name)
        applied.append(path.name)
    return applied


def _log_notice(diagnostic: psycopg.errors.Diagnostic) -> None:
    """Server notices and warnings (e.g. from the TimescaleDB block) go to the log."""
    level = logging.WARNING if diagnostic.severity_nonlocalized == "WARNING" else logging.DEBUG
    log.log(level, "postgres: %s", diagnostic.message_primary)
