"""Translates psycopg and pool exceptions into the store's errors, at the adapter's edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed, PoolTimeout

from process_engine.domain.errors import (
    ConcurrencyConflict,
    ProcessEngineError,
    StoreError,
    StoreUnavailable,
)

# Raised by process_engine_conflict() (migrations/0001_initial.sql).
CONFLICT_SQLSTATE = "PE409"
# Deadlock and serialisation failure: another writer won; re-reading and retrying helps.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


@contextmanager
def translated(what: str, unique_is_conflict: bool = False) -> Iterator[None]:
    """Run a block, turning library errors into StoreError subclasses naming `what`.

    With `unique_is_conflict`, a unique violation means another writer got there
    first (an instance, timer or ledger entry already exists): ConcurrencyConflict.
    """
    try:
        yield
    except ProcessEngineError:
        raise
    except (PoolTimeout, PoolClosed) as error:
        raise StoreUnavailable(f"{what}: no database connection available ({error})") from error
    except psycopg.Error as error:
        raise translate(what, error, unique_is_conflict) from error


def translate(what: str, error: psycopg.Error, unique_is_conflict: bool = False) -> StoreError:
    """The store error that stands for one psycopg error."""
    detail = _describe(error)
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate == CONFLICT_SQLSTATE or sqlstate in _RETRY_SQLSTATES:
        return ConcurrencyConflict(f"{what}: {detail}")
    if unique_is_conflict and isinstance(error, pg_errors.UniqueViolation):
        return ConcurrencyConflict(f"{what}: already written by another writer ({detail})")
    if isinstance(error, psycopg.OperationalError):
        return StoreUnavailable(f"{what}: database unavailable ({detail})")
    return StoreError(f"{what} failed: {detail}")


def _describe(error: psycopg.Error) -> str:
    """The server's primary message plus the constraint, or the client's message."""
    diag = getattr(error, "diag", None)
    message = (diag.message_primary if diag is not None else None) or str(error)
    message = " ".join(message.split())  # libpq's messages span lines; a log line should not
    constraint = diag.constraint_name if diag is not None else None
    return f"{message} [{constraint}]" if constraint else message
