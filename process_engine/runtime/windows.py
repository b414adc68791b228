"""The host of windowed variables: one call per message of a definition with windows.

The key's window state lives in its trigger state (runtime/holds.py), read in the
batch's one prefetch and written with the batch's commit, beside a ledger entry per
windowed message: a redelivery after a crash is skipped, so it is never counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from process_engine.domain.definition import ProcessDefinition
from process_engine.engine.triggers import Match
from process_engine.engine.windows import windowed_match
from process_engine.ports import IncomingMessage, LedgerEntry
from process_engine.runtime.unit_of_work import UnitOfWork


def message_time_ms(message: IncomingMessage, now: datetime) -> int:
    """The message's time: its Kafka timestamp, else the engine's clock (replay records both)."""
    return message.timestamp_ms if message.timestamp_ms is not None else int(now.timestamp() * 1000)


def match_windowed(
    unit: UnitOfWork, definition: ProcessDefinition, document: Mapping[str, Any], message: IncomingMessage, key: str | None
) -> Match:
    """The message's match (`key`: its correlation key) with the key's aggregates, its window state updated in `unit`."""
    state = unit.holds.state(definition, key) if key is not None else None
    found, kept = windowed_match(definition, document, key, state.windows if state else None, message_time_ms(message, unit.now))
    if state is not None:
        unit.holds.keep_windows(state, kept)
    return found


def ledger_windowed(unit: UnitOfWork, message: IncomingMessage, definition_id: str) -> None:
    """Enter the message in the ledger for the definition unless its start already did."""
    last = unit.ledger[-1] if unit.ledger else None
    if last is None or last.coordinate != message.coordinate or last.definition_id != definition_id:
        unit.ledger.append(LedgerEntry(message.coordinate, definition_id, None))
