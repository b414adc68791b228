"""Message bodies for MQTT and Kafka: bytes as they are, text as UTF-8, the rest as compact JSON."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from process_engine.domain.errors import ActionError


def encode_payload(payload: Any) -> bytes:
    """Bytes as they are, text as UTF-8, None as empty, anything else as compact JSON.

    Raises:
        ActionError: the payload cannot be written as JSON (not retriable).
    """
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    try:
        return json.dumps(payload, separators=(",", ":"), default=_json_default).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ActionError(f"payload is not JSON-serialisable: {error}", retriable=False) from None


def _json_default(value: Any) -> Any:
    # YAML turns unquoted timestamps into datetimes; send them as ISO-8601 text.
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
