"""Screening a batch of trigger messages: each condition evaluated while the active-instance query runs.

Most telemetry starts nothing: its condition is false and its key has no active
instance. The active-key index (ports.ActiveKeys) rules most such keys out without
a query: its sync runs in `lookups()` while the batch is decoded. The batch then asks
the store for the active instances of the keys left, in one query; the conditions
need nothing from that answer, so they are evaluated on the consumer's thread while
the query waits on the database in `lookups()`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from process_engine.domain.definition import ProcessDefinition
from process_engine.engine.triggers import screen

# A definition, the message's key for it, and its condition's outcome: True or False,
# the error it raised, or None for a windowed definition (matched with its window state).
Screened = tuple[ProcessDefinition, str | None, bool | Exception | None]
Pair = tuple[str, str]  # (definition id, correlation key)
SYNC_WAIT_SECONDS = 2.0  # how long a batch waits for the active-key index before querying every key
log = logging.getLogger("process_engine.dispatcher")
_POOL: list[ThreadPoolExecutor] = []
_LOCK = threading.Lock()


def lookups() -> ThreadPoolExecutor:
    """The threads a batch's active-instance query runs on while its conditions are evaluated.

    Shared by the process's dispatchers: a lookup only waits on the store, so a busy
    pool only queues it.
    """
    if not _POOL:
        with _LOCK:
            if not _POOL:
                _POOL.append(ThreadPoolExecutor(4, thread_name_prefix="active-lookup"))
    return _POOL[0]


def screen_all(document: dict[str, Any], pairs: list[tuple[ProcessDefinition, str | None]]) -> list[Screened]:
    """Each definition's condition on the message (windowed ones wait for their window state)."""
    entries: list[Screened] = []
    for definition, key in pairs:
        if definition.windowed:
            entries.append((definition, key, None))
            continue
        try:
            entries.append((definition, key, screen(definition, document)))
        except Exception as error:  # dead-lettered in order, with the batch's other outcomes
            entries.append((definition, key, error))
    return entries


def screen_batch(keyed: Sequence[tuple[Any, dict[str, Any], list[tuple[ProcessDefinition, str | None]]]]) -> list[tuple[Any, dict[str, Any], list[Screened]]]:
    """`screen_all` for each (message, document, definitions with keys) of a batch, the message kept beside it."""
    return [(message, document, screen_all(document, pairs)) for message, document, pairs in keyed]


def worth_asking(synced: Future[Callable[[list[Pair]], list[Pair]]] | None, wanted: list[Pair]) -> list[Pair]:
    """The pairs worth a query: those the active-key index, synced since the batch was polled, cannot rule out."""
    if synced is None or not wanted:
        return wanted
    try:
        return synced.result(timeout=SYNC_WAIT_SECONDS)(wanted)
    except Exception as error:  # TimeoutError too: the index is only a shortcut, so a stuck sync holds up no batch
        log.debug("active-key index unusable (%s: %s); querying every key", type(error).__name__, error)
        return wanted
