"""TimescaleDB retention and compression for `process_history`, driven by settings."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from process_engine.adapters.postgres.errors import translated
from process_engine.adapters.postgres.queries import query

log = logging.getLogger(__name__)


def configure_history(conninfo: str, retention: str | None, compress_after: str | None) -> bool:
    """`configure_timescale` on its own connection: what `run` and `migrate` call."""
    with translated("connecting to configure TimescaleDB policies"):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return configure_timescale(conn, retention, compress_after)


def configure_timescale(
    conn: psycopg.Connection[Any], retention: str | None, compress_after: str | None
) -> bool:
    """Make the history policies match the settings; a no-op without TimescaleDB.

    Args:
        conn: an open connection to the migrated database.
        retention: drop history chunks older than this interval (e.g. "90 days");
            None removes a retention policy set earlier.
        compress_after: compress chunks older than this interval (e.g. "7 days");
            None removes a compression policy (compressed chunks stay compressed).

    Returns:
        True when the policies were applied, False when TimescaleDB is not in use.
    """
    with translated("configuring TimescaleDB policies"), conn.transaction():
        if not _hypertable_ready(conn, retention, compress_after):
            return False
        _sync_policy(conn, "policy_retention", "drop_after", retention, "retention")
        if compress_after is not None and not _compression_enabled(conn):
            conn.execute(query("timescale_enable_compression"))
        _sync_policy(conn, "policy_compression", "compress_after", compress_after, "compression")
    return True


def _hypertable_ready(
    conn: psycopg.Connection[Any], retention: str | None, compress_after: str | None
) -> bool:
    """True when the extension is installed and process_history is a hypertable."""
    wanted = retention is not None or compress_after is not None
    if conn.execute(query("timescale_version")).fetchone() is None:
        if wanted:
            log.info(
                "timescaledb is not installed in this database: HISTORY_RETENTION and "
                "HISTORY_COMPRESS_AFTER are ignored; process_history is a plain table"
            )
        return False
    if not conn.execute(query("timescale_hypertable")).fetchall():
        log.warning(
            "timescaledb is installed but process_history is not a hypertable (it was "
            "migrated before the extension existed); history policies are not applied"
        )
        return False
    return True


def _compression_enabled(conn: psycopg.Connection[Any]) -> bool:
    """Whether ALTER TABLE ... SET (timescaledb.compress) was already done."""
    row = conn.execute(query("timescale_hypertable")).fetchone()
    return bool(row and row[0])


def _sync_policy(
    conn: psycopg.Connection[Any], proc_name: str, config_key: str, interval: str | None, kind: str
) -> None:
    """Replace the policy job only when its interval differs (add_* keeps an old one)."""
    params = {"proc_name": proc_name, "config_key": config_key, "interval": interval}
    current = conn.execute(query("timescale_policy_interval"), params).fetchall()
    if interval is not None and current and all(row[0] for row in current):
        return
    conn.execute(query(f"timescale_remove_{kind}"))
    if interval is not None:
        conn.execute(query(f"timescale_add_{kind}"), {"interval": interval})
        log.info("process_history %s policy set to %s", kind, interval)
