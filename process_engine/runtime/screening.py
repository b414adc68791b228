"""Screening a batch of trigger messages: which do something, decided with the fewest steps.

Most telemetry starts nothing: its condition is false and its key has no active
instance. The active-key index (ports.ActiveKeys) rules most such keys out without
a query: its sync is sent when the batch starts and read back once the batch's
messages are decoded, keyed and screened (`fast_screen`, one fused step per message
where the definitions allow it). The batch then asks the store for the active
instances of the keys left, in one query, and `loud` keeps only the messages that
may do something.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

import orjson

from process_engine.domain.definition import ProcessDefinition
from process_engine.engine.triggers import key_function, screen, screener
from process_engine.ports import PendingSync
from process_engine.runtime.message_decoding import MessageLimits

# A definition, the message's key for it, and its condition's outcome: True or False,
# the error it raised, or None for a windowed definition (matched with its window state).
Screened = tuple[ProcessDefinition, str | None, bool | Exception | None]
Pair = tuple[str, str]  # (definition id, correlation key)
SYNC_WAIT_SECONDS = 2.0  # how long a batch waits for the active-key index before querying every key
log = logging.getLogger("process_engine.dispatcher")


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


# A screened message: its document, each definition's (definition, key, outcome), and the
# (definition id, key) pairs it names when every outcome is False (None when one is not):
# a message with such pairs does nothing unless one of them has an active instance.
Fused = tuple[dict[str, Any], list[Screened], list[Pair] | None]


def fast_screen(definitions: Sequence[ProcessDefinition], limits: MessageLimits) -> Callable[[bytes | None, bytes | None], Fused | None] | None:
    """Decoding, keys and conditions of one topic's messages in one step, bound to the calling thread.

    None when a definition needs more than its condition (a window, hold rules).
    The function answers None for a message it cannot vouch for (refused, or raising):
    the general path then decodes it and says why, so every answer is the general path's.
    """
    if not definitions or any(d.windowed or d.trigger.holds for d in definitions):
        return None
    checks = [(definition, definition.id, key_function(definition), screener(definition)) for definition in definitions]
    max_bytes, max_depth, loads = limits.max_bytes, limits.max_depth, orjson.loads
    shallow = 2 * max_depth + 1  # decode_message's gate: no shorter message can be too deep

    def fused(value: bytes | None, message_key: bytes | None) -> Fused | None:
        if value is None or len(value) > max_bytes:
            return None
        try:
            document = loads(value)
        except ValueError:  # UnicodeDecodeError too
            return None
        if type(document) is not dict or (len(value) > shallow and value.count(b"{") + value.count(b"[") > max_depth):
            return None
        entries: list[Screened] = []
        quiet: list[Pair] | None = []
        for definition, definition_id, key_of, check in checks:
            try:
                key, outcome = key_of(document, message_key), check(document)
            except Exception:  # the general path dead-letters it, with the reason
                return None
            entries.append((definition, key, outcome))
            if outcome:
                quiet = None
            elif quiet is not None and key is not None:
                quiet.append((definition_id, key))
        return document, entries, quiet

    return fused


def loud(screened: Sequence[tuple[Any, dict[str, Any], list[Screened], list[Pair] | None]], active: Collection[Pair],
         carried: Collection[Pair]) -> tuple[list[tuple[Any, dict[str, Any], list[Screened], list[Pair] | None]], set[Pair]]:
    """The screened messages that may do something, in order, and the pairs they name; the others provably do nothing.

    A message whose outcomes are all False (its quiet pairs) does nothing unless one of
    its pairs has an instance active in the store (`active`), written by the batch
    before (`carried`), or possibly started by a message before it in this batch.
    """
    kept = []
    touched: set[Pair] = set()
    for entry in screened:
        quiet = entry[3]
        if quiet is not None:
            for pair in quiet:  # a loop, not any(): most messages have one pair, and a generator costs more
                if pair in active or pair in carried or pair in touched:
                    break
            else:
                continue
        kept.append(entry)
        touched.update((definition.id, key) for definition, key, _ in entry[2] if key is not None)
    return kept, touched


def worth_asking(synced: PendingSync | None, wanted: list[Pair]) -> list[Pair]:
    """The pairs worth a query: those the active-key index, synced since the batch was polled, cannot rule out."""
    if synced is None or not wanted:
        return wanted
    try:
        return synced.result(SYNC_WAIT_SECONDS)(wanted)
    except Exception as error:  # TimeoutError too: the index is only a shortcut, so a stuck sync holds up no batch
        log.debug("active-key index unusable (%s: %s); querying every key", type(error).__name__, error)
        return wanted
