"""Screening a batch of trigger messages: which do something, decided with the fewest steps.

Most telemetry starts nothing: its condition is false and its key has no active
instance. The active-key index (ports.ActiveKeys) rules most such keys out without
a query: its sync is sent when the batch starts and read back once the batch's
messages are screened (`quiet_scanner`, one loop over the batch's values where the
definitions allow it, building nothing per message; the others one by one through
`fast_screen` or the general path). The batch then asks the store for the active
instances of the keys left, in one query, and `ScreenedBatch.kept` keeps only the
messages that may do something, building an IncomingMessage for those alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from process_engine.domain.definition import ProcessDefinition
from process_engine.engine.triggers import key_function, screen, screener
from process_engine.ports import IncomingBatch, IncomingMessage, PendingSync
from process_engine.runtime.message_decoding import MessageLimits
from process_engine.runtime.quiet_scan import path_scan

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
    if not _screenable(definitions):
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


def _screenable(definitions: Sequence[ProcessDefinition]) -> bool:
    """Whether a topic's definitions need nothing but their conditions and keys (no window, no hold rules)."""
    return bool(definitions) and not any(d.windowed or d.trigger.holds for d in definitions)


# One column of keys per definition (None where the message names no pair, or is loud), and
# the indices of the messages it cannot call quiet, in order.
QuietScan = tuple[list[list[str | None]], list[int]]
Scan = Callable[[Sequence[bytes | None], Sequence[bytes | None], "list[dict[str, Any] | None] | None"], QuietScan]


def quiet_scanner(definitions: Sequence[ProcessDefinition], limits: MessageLimits
                  ) -> Scan | None:
    """One topic's batch screened for messages that provably do nothing, building nothing per message.

    A message is quiet when `fast_screen` would vouch for it and find every outcome
    False: then only its keys matter (does one have an active instance?). Every other
    message is loud, and the caller takes it through `fast_screen` or the general
    path, which decide it as before. None where `fast_screen` is None, or where a
    definition has no condition (every message matches). Given a list
    (`documents`, one slot per message), the scan also leaves each quiet message's
    decoded document in its slot, for a batch where many of them will matter.
    """
    if not _screenable(definitions) or any(d.trigger.condition is None for d in definitions):
        return None  # without a condition every message matches: none is quiet
    max_bytes, max_depth, loads = limits.max_bytes, limits.max_depth, orjson.loads
    shallow = 2 * max_depth + 1
    definition = definitions[0]
    steps = definition.trigger.correlate.keys if definition.trigger.correlate is not None else None
    compared = definition.trigger.condition.comparison()
    if len(definitions) == 1 and steps and compared is not None and not definition.condition_variables:
        # The commonest shape: a loop written for its paths (quiet_scan), as key_function and
        # screener follow them; anything they would hand to the general code makes the message loud.
        written = path_scan(steps, compared[0], compared[1], compared[2], max_bytes, max_depth)
        if written is not None:
            return written
    checks = [(key_function(definition), screener(definition)) for definition in definitions]

    def scan(values: Sequence[bytes | None], message_keys: Sequence[bytes | None], documents: list[dict[str, Any] | None] | None = None) -> QuietScan:
        columns: list[list[str | None]] = [[None] * len(values) for _ in checks]
        loud: list[int] = []
        for index, value in enumerate(values):
            if value is None or len(value) > max_bytes:
                loud.append(index)
                continue
            try:
                document = loads(value)
            except ValueError:
                loud.append(index)
                continue
            if type(document) is not dict or (len(value) > shallow and value.count(b"{") + value.count(b"[") > max_depth):
                loud.append(index)
                continue
            for column, (key_of, check) in zip(columns, checks):
                try:
                    key, outcome = key_of(document, message_keys[index]), check(document)
                except Exception:
                    outcome = True
                if outcome:
                    loud.append(index)
                    for column in columns:  # a loud message leaves no key: its own entry will name them
                        column[index] = None
                    break
                column[index] = key
            else:
                if documents is not None:
                    documents[index] = document
        return columns, loud

    return scan


Entry = tuple[IncomingMessage, dict[str, Any], list[Screened], list[Pair] | None]  # a message screened on its own


class TopicScreen(NamedTuple):
    """How one topic's messages are screened in a batch: its definitions, the fused step and the quiet scan (None where they cannot be used)."""

    definitions: list[ProcessDefinition]
    fused: Callable[[bytes | None, bytes | None], Fused | None] | None
    scan: Scan | None

    @classmethod
    def of(cls, definitions: list[ProcessDefinition], limits: MessageLimits) -> TopicScreen:
        """The screen of a topic with these definitions."""
        return cls(definitions, fast_screen(definitions, limits), quiet_scanner(definitions, limits))


class _QuietGroup(NamedTuple):
    """One topic's scanned messages: a key column per definition, and each batch index's row in them."""

    screen: TopicScreen
    columns: list[list[str | None]]
    rows: dict[int, int] | None  # None: the row is the batch index
    documents: list[dict[str, Any] | None] | None  # the quiet rows' documents, when kept


class ScreenedBatch:
    """A batch screened: the loud messages on their own (`Entry`), the quiet ones as key columns.

    `kept` then gives the messages that may do something, in order, building only those.
    """

    def __init__(self, batch: IncomingBatch, order: Sequence[int], screens: Mapping[str, TopicScreen],
                 on_its_own: Callable[[int, TopicScreen], Entry | None], keep_documents: bool = False):
        """Screen the messages at `order` (batch indices, in order); `on_its_own(index, screen)`
        screens a message that is not quiet (None: it was dead-lettered). `keep_documents`
        when many quiet ones may matter (keys with active instances): they are not decoded twice."""
        self.batch, self.order = batch, order
        self.full: dict[int, Entry] = {}
        self._group_of: dict[str, _QuietGroup] = {}
        loud: list[int] = []
        topics = batch.topics
        by_topic: dict[str, list[int]] = {}
        if order and len(order) == len(batch) and len(screens) == 1:  # one topic, nothing skipped: the common case
            by_topic[topics[0]] = list(order)
        else:
            for index in order:
                by_topic.setdefault(topics[index], []).append(index)
        for topic, indices in by_topic.items():
            screen = screens[topic]
            if screen.scan is None:
                loud.extend(indices)
                continue
            whole = len(indices) == len(batch)
            values = batch.values if whole else [batch.values[i] for i in indices]
            keys = batch.keys if whole else [batch.keys[i] for i in indices]
            documents: list[dict[str, Any] | None] | None = [None] * len(values) if keep_documents else None
            columns, rows = screen.scan(values, keys, documents)
            loud.extend(indices[row] for row in rows)
            group = _QuietGroup(screen, columns, None if whole else {i: r for r, i in enumerate(indices)}, documents)
            self._group_of[topic] = group
        for index in sorted(loud):  # in order: dead letters keep the batch's order
            entry = on_its_own(index, screens[topics[index]])
            if entry is not None:
                self.full[index] = entry
        self._loud = set(loud)
        self._quiet_pairs: set[Pair] | None = None

    def key_sets(self) -> dict[str, set[str]]:
        """Every key the screened messages name, per definition id: a set per column, made in C, and no pair per key."""
        sets: dict[str, set[str]] = {}
        for group in self._group_of.values():
            for definition, column in zip(group.screen.definitions, group.columns):
                keys = set(column)
                keys.discard(None)
                held = sets.get(definition.id)
                if not keys:
                    continue  # no definition without keys: a batch that names none need not wait for the index
                if held is None:
                    sets[definition.id] = keys
                else:
                    held |= keys
        for _, _, entries, _ in self.full.values():
            for definition, key, _ in entries:
                if key is not None:
                    sets.setdefault(definition.id, set()).add(key)
        return sets

    def kept(self, active: Collection[Pair], carried: Collection[Pair]) -> tuple[list[Entry], set[Pair]]:
        """The messages that may do something, in order, and the pairs they name; the others provably do nothing.

        A message whose outcomes are all False does nothing unless one of its pairs has an
        instance active in the store (`active`), written by the batch before (`carried`),
        or possibly started by a message before it in this batch.
        """
        hot: set[Pair] = set()
        if active or carried:
            hot = {pair for pair in self._quiet() if pair in active or pair in carried}
        if not hot and not self.full:  # most telemetry: nothing in the batch can do anything
            return [], set()
        kept: list[Entry] = []
        touched: set[Pair] = set()
        topics, loud = self.batch.topics, self._loud
        for index in self.order:
            entry = self.full.get(index)
            if entry is None:
                if index in loud:
                    continue  # dead-lettered
                group = self._group_of[topics[index]]
                row = index if group.rows is None else group.rows[index]
                for definition, column in zip(group.screen.definitions, group.columns):
                    key = column[row]
                    if key is not None and ((definition.id, key) in hot or (definition.id, key) in touched):
                        break
                else:
                    continue
                entry = _built(self.batch.message(index), group, row)
            else:
                quiet = entry[3]
                if quiet is not None:
                    for pair in quiet:
                        if pair in active or pair in carried or pair in touched:
                            break
                    else:
                        continue
            kept.append(entry)
            touched.update((definition.id, key) for definition, key, _ in entry[2] if key is not None)
        return kept, touched

    def _quiet(self) -> set[Pair]:
        """The (definition id, key) pairs the scanned messages name, once per batch: a comprehension per column."""
        if self._quiet_pairs is None:
            self._quiet_pairs = set()
            for group in self._group_of.values():
                for definition, column in zip(group.screen.definitions, group.columns):
                    definition_id = definition.id
                    self._quiet_pairs.update({(definition_id, key) for key in set(column) if key is not None})
        return self._quiet_pairs


def _built(message: IncomingMessage, group: _QuietGroup, row: int) -> Entry:
    """A quiet message that matters after all, as the fused step screens it (every outcome False)."""
    document = group.documents[row] if group.documents is not None else None
    if document is None:
        document = orjson.loads(message.value)  # decoded once already, within the limits
    entries: list[Screened] = [(definition, column[row], False) for definition, column in zip(group.screen.definitions, group.columns)]
    return message, document, entries, [(definition.id, key) for definition, key, _ in entries if key is not None]


def worth_asking(synced: PendingSync | None, key_sets: Mapping[str, Collection[str]], known: Collection[Pair]) -> list[Pair]:
    """The pairs worth a query: of `key_sets` (keys per definition id), those the active-key index, synced since
    the batch was polled, cannot rule out, and that are not `known` (the unit has read them)."""
    possible: Mapping[str, Collection[str]] = key_sets
    if synced is not None and key_sets:
        try:
            answer = synced.result(SYNC_WAIT_SECONDS)
            possible = {definition_id: answer.keys(definition_id, keys) for definition_id, keys in key_sets.items()}
        except Exception as error:  # TimeoutError too: the index is only a shortcut, so a stuck sync holds up no batch
            log.debug("active-key index unusable (%s: %s); querying every key", type(error).__name__, error)
    pairs = [(definition_id, key) for definition_id, keys in possible.items() for key in keys]
    return [pair for pair in pairs if pair not in known] if known else pairs
