"""The in-memory index of correlation keys that may have an active instance, kept by LISTEN.

Migration 0008 makes PostgreSQL send a notice on `process_engine_active_keys` for
every commit that makes an instance with a key active, whoever the writer is (this
engine, another replica, the API, a retry from the command line). This index loads
the active keys once, then adds every pair the notices name; keys whose instances
ended stay in it (an answer of "maybe" costs one look-up) until the next full
re-read prunes them.

Why a batch may trust it: `sync` sends a sync notice on a channel of the
listening connection's own and reads until it is back, on the caller's thread.
PostgreSQL delivers notices in commit order, so once the sync is back every notice
of a commit that finished before the call has been read. `start_sync` does the same
in two halves: it sends the notice and returns, and the batch reads the answer when
it needs it, by when it has usually arrived (no thread, no wait). Until the index has
loaded, after its connection drops, while another thread is using the connection, or
when the sync does not come back with its own result, it answers "maybe" for every
pair: the engine then queries as it did without the index.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Collection, Sequence

import orjson
import psycopg
from psycopg import pq

from process_engine.adapters.postgres.queries import query
from process_engine.ports import AnsweredSync, KeyFilter

log = logging.getLogger(__name__)
CHANNEL = "process_engine_active_keys"
Pair = tuple[str, str]
SYNC_READ_SECONDS = 2.0  # the longest a pending sync is waited for when its caller gives no timeout


class _EveryPair:
    """The filter of an index that cannot be trusted now: every pair may be active."""

    def __call__(self, pairs: Sequence[Pair]) -> list[Pair]:
        return list(pairs)

    def keys(self, definition_id: str, keys: Collection[str]) -> list[str]:
        """Every key."""
        return list(keys)


_every_pair = _EveryPair()


class _Possible:
    """The filter of an index that has caught up: the pairs whose key's hash it holds for their definition.

    It reads the index's sets as they are when it is used, which only grow between
    re-reads (and a re-read covers what it replaces), so it stays right after later commits.
    """

    def __init__(self, index: PostgresActiveKeys):
        self.index = index

    def __call__(self, pairs: Sequence[Pair]) -> list[Pair]:
        by_definition = self.index._keys
        return [pair for pair in pairs if hash(pair[1]) in by_definition.get(pair[0], ())]

    def keys(self, definition_id: str, keys: Collection[str]) -> list[str]:
        """The keys, of one definition's, that may have an active instance: most telemetry has none, told in C."""
        held = self.index._keys.get(definition_id)
        if not held or held.isdisjoint(map(hash, keys)):
            return []
        return [key for key in keys if hash(key) in held]


def _wait(fd: int, events: int, deadline: float, seconds: float = SYNC_READ_SECONDS) -> None:
    """Wait until the socket is ready for `events` (poll: no limit on the descriptor's number), or raise at `deadline`."""
    waiter = select.poll()
    waiter.register(fd, events)
    left = deadline - time.monotonic()
    if left <= 0 or not waiter.poll(left * 1000):
        raise TimeoutError(f"no answer to the active-key sync within {seconds} s")


class PendingSync:
    """A sync notice sent on the index's connection, its answer not read yet; the index's lock is held until it is."""

    def __init__(self, index: PostgresActiveKeys, conn: psycopg.Connection, number: int):
        self.index, self.conn, self.number = index, conn, number
        self.answer: KeyFilter | None = None

    def result(self, timeout: float | None = None) -> KeyFilter:
        """Read the answer (waiting up to `timeout` seconds for it) and every notice before it; returns the filter.

        A connection that does not answer in time is dropped, and the filter lets every pair through.
        """
        if self.answer is None:
            answer: KeyFilter = _every_pair
            try:
                if self.index._finish(self.conn, self.number, timeout):
                    answer = self.index._possible
            finally:  # once, whatever was raised: `close` after an interrupted read must not release it again
                self.answer = answer
                self.index._lock.release()
        return self.answer

    def close(self) -> None:
        """Read the answer if nobody has: the connection is then free for the next sync."""
        if self.answer is None:
            self.result()


class PostgresActiveKeys:
    """ActiveKeys for the PostgreSQL store: one listening connection and a thread that keeps it."""

    def __init__(self, conninfo: str, reload_interval: float = 600.0, retry_delay: float = 1.0, drain_interval: float = 1.0):
        self.conninfo = conninfo
        self.reload_interval = reload_interval  # seconds between re-reads that drop keys no longer active
        self.retry_delay = retry_delay  # seconds between attempts to reconnect
        self.drain_interval = drain_interval  # an idle index reads its notices this often
        # The hashes of the keys per definition id: a collision only answers "maybe", and a
        # batch's keys of one definition are told apart from the index's with one set operation.
        self._keys: dict[str, set[int]] = {}
        self._loading: list[Pair] | None = None  # notices read while a load runs, added to its result
        self._possible = _Possible(self)
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()  # the connection: one sync, load or drain at a time
        self._ready = threading.Event()
        self._reload = False  # an "overflow" or unreadable notice came: re-read before answering
        self._sent = 0  # the last sync notice sent
        self._seen = 0  # the last sync notice read back
        self._loaded = 0.0
        self._used = 0.0
        self._sync_channel = ""  # this connection's own channel for syncs: no other listener reads them
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="active-keys", daemon=True)

    @classmethod
    def start(cls, conninfo: str, **options: float) -> PostgresActiveKeys:
        """An index following `conninfo`; it answers "maybe" until its first load is done."""
        index = cls(conninfo, **options)
        index._thread.start()
        return index

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the index has loaded; False if it has not within `timeout` seconds."""
        return self._ready.wait(timeout)

    def sync(self) -> KeyFilter:
        """Read every notice of a commit finished before this call; returns the filter that may then be used.

        The filter keeps the pairs that may have an active instance (every pair, when
        the index cannot be trusted now). It stays right after later commits too: the
        index only grows between re-reads, and a re-read covers what it replaces.
        """
        return self.start_sync().result()

    def start_sync(self) -> PendingSync | AnsweredSync:
        """`sync` in two halves: the notice is sent now; `result()` of the answer reads it back and gives the filter.

        The caller must call `result` or `close` of what it gets: until then nothing else
        uses the index's connection.
        """
        if not self._lock.acquire(blocking=False):
            return AnsweredSync(_every_pair)
        conn = self._conn
        if conn is None:
            self._lock.release()
            return AnsweredSync(_every_pair)
        self._sent += 1
        self._used = time.monotonic()
        try:
            pgconn = conn.pgconn
            pgconn.send_query_params(query("notify_active_keys").encode(), [self._sync_channel.encode(), str(self._sent).encode()])
            deadline = time.monotonic() + SYNC_READ_SECONDS
            while pgconn.flush():  # a few bytes: sent at once unless the socket is full
                _wait(pgconn.socket, select.POLLOUT | select.POLLIN, deadline)
                pgconn.consume_input()
        except Exception as error:
            self._lost(conn, error)
            self._lock.release()
            return AnsweredSync(_every_pair)
        return PendingSync(self, conn, self._sent)

    def _finish(self, conn: psycopg.Connection, number: int, timeout: float | None) -> bool:
        """Read a sent sync's result and the notices before it (holding the lock); False if it cannot be had."""
        seconds = SYNC_READ_SECONDS if timeout is None else timeout
        deadline = time.monotonic() + seconds
        try:
            pgconn = conn.pgconn
            while True:  # libpq's get_result blocks while it is busy: wait for the socket first, each time
                pgconn.consume_input()
                while pgconn.is_busy():
                    _wait(pgconn.socket, select.POLLIN, deadline, seconds)
                    pgconn.consume_input()
                result = pgconn.get_result()
                if result is None:
                    break
                if result.status != pq.ExecStatus.TUPLES_OK:
                    raise psycopg.OperationalError((result.error_message or b"").decode("utf-8", "replace") or "sync failed")
            while (notice := pgconn.notifies()) is not None:
                self._apply(notice.relname.decode("utf-8", "replace"), notice.extra.decode("utf-8", "replace"))
            if self._reload:
                self._load(conn)
        except Exception as error:  # the connection, or a notice that broke its handler: start again
            self._lost(conn, error)
            return False
        if self._seen < number:  # PostgreSQL sends its own notices before the result: not expected
            log.debug("active-key sync %d not back with its result; asking the store instead", number)
            return False
        return True

    def possibly_active(self, pairs: Sequence[Pair]) -> list[Pair]:
        """The pairs that may have an active instance, every commit finished before this call counted."""
        return self.sync()(pairs) if pairs else []

    def close(self) -> None:
        """Stop listening and close the connection, once a batch that holds it lets it go (at most a few seconds)."""
        self._stop.set()
        self._thread.join(5.0)
        # A consumer thread still in a batch holds the lock until its sync is read; one
        # stuck elsewhere must not keep the process from stopping.
        held = self._lock.acquire(timeout=SYNC_READ_SECONDS + 1.0)
        try:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        finally:
            if held:
                self._lock.release()

    # -- on the caller's thread, holding the lock ---------------------------------------
    def _load(self, conn: psycopg.Connection) -> None:
        """Re-read every active key; notices read meanwhile join the new set."""
        self._reload = False
        self._loading = []
        try:
            rows = conn.execute(query("active_keys")).fetchall()
            keys: dict[str, set[int]] = {}
            for definition_id, key in [*rows, *self._loading]:
                keys.setdefault(definition_id, set()).add(hash(key))
            self._keys = keys
        finally:
            self._loading = None
        self._loaded = time.monotonic()
        log.debug("active-key index loaded: %d key(s)", sum(map(len, self._keys.values())))

    def _notice(self, notice: psycopg.Notify) -> None:
        """Apply one notice (psycopg's notify handler, called while the lock's holder reads)."""
        self._apply(notice.channel, notice.payload)

    def _apply(self, channel: str, payload: str) -> None:
        if channel == self._sync_channel:
            self._seen = max(self._seen, int(payload))
            return
        if payload == "overflow":
            self._reload = True
            return
        try:  # anyone may NOTIFY the channel: what cannot be read is made up for by a re-read
            added = [(str(definition_id), key, hash(key)) for definition_id, key in orjson.loads(payload)]
        except (ValueError, TypeError):
            log.warning("active-key notice not understood (%r); re-reading every active key", payload[:100])
            self._reload = True
            return
        keys = self._keys
        for definition_id, key, hashed in added:
            keys.setdefault(definition_id, set()).add(hashed)
        if self._loading is not None:
            self._loading.extend((definition_id, key) for definition_id, key, _ in added)

    def _lost(self, conn: psycopg.Connection, error: Exception) -> None:
        log.warning("active-key index lost its database connection (%s); batches query the store until it is back", error)
        self._ready.clear()
        self._conn = None
        conn.close()

    # -- the keeper thread: connects, reconnects, re-reads, and reads notices when idle ---
    def _keep(self) -> None:
        while not self._stop.is_set():
            if self._conn is None:
                self._connect()
                if self._conn is None:
                    self._stop.wait(self.retry_delay)
                    continue
            if self._stop.wait(self.drain_interval):
                return
            if not self._lock.acquire(blocking=False):  # in use, so it is read anyway
                if time.monotonic() - self._loaded > self.reload_interval:
                    self._reload = True  # a busy consumer holds the lock from batch to batch: its next sync re-reads
                continue
            try:
                conn = self._conn
                if conn is None:
                    continue
                try:
                    if self._reload or time.monotonic() - self._loaded > self.reload_interval:
                        self._load(conn)
                    elif time.monotonic() - self._used > self.drain_interval:
                        conn.execute("SELECT 1")  # reads the notices waiting on the socket
                except Exception as error:  # the keeper must outlive any one failure
                    self._lost(conn, error)
            finally:
                self._lock.release()

    def _connect(self) -> None:
        try:
            # Timeouts, so a connection that went silent fails its sync rather than hold it.
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10, keepalives=1, keepalives_idle=10,
                                   keepalives_interval=5, keepalives_count=3, tcp_user_timeout=15_000)
        except psycopg.Error as error:
            log.warning("active-key index cannot connect (%s); batches query the store until it can", error)
            return
        try:
            # A pooler (PgBouncer) shows a backend id of its own and may hand this session's
            # notices to another client: the index is only right on a session of its own.
            (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (None,)
            if pid != conn.info.backend_pid:
                log.warning("active-key index off: DATABASE_URL goes through a connection pooler (LISTEN needs a "
                            "session of its own); every batch queries the store")
                conn.close()
                self._stop.set()
                return
            # A sync's commit need not wait for the disk: nothing is kept of it.
            conn.execute("SET synchronous_commit = off")
            conn.add_notify_handler(self._notice)
            with self._lock:
                if self._stop.is_set():  # closed while connecting
                    conn.close()
                    return
                self._sync_channel = f"{CHANNEL}_sync_{pid}"
                # Listening first: a commit after the load's snapshot is in a notice read after it.
                conn.execute(f"LISTEN {CHANNEL}")
                conn.execute(f"LISTEN {self._sync_channel}")
                self._load(conn)
                self._conn = conn
            self._ready.set()
        except psycopg.Error as error:
            log.warning("active-key index could not load (%s); batches query the store until it can", error)
            conn.close()
