"""Screening a batch of trigger messages: each condition evaluated while the active-instance query runs.

Most telemetry starts nothing: its condition is false and its key has no active
instance. A batch asks the store for the active instances of all its keys in one
query; the conditions need nothing from that answer, so they are evaluated on the
consumer's thread while the query waits on the database in `lookups()`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from process_engine.domain.definition import ProcessDefinition
from process_engine.engine.triggers import screen

# A definition, the message's key for it, and its condition's outcome: True or False,
# the error it raised, or None for a windowed definition (matched with its window state).
Screened = tuple[ProcessDefinition, str | None, bool | Exception | None]
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
