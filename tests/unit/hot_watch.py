"""A definition that starts on a hot reading and waits an hour, and readings for it: for the active-key tests."""

from __future__ import annotations

import orjson

from process_engine.ports import IncomingMessage, MessageCoordinate

WATCH = """
id: hot-watch
trigger: {type: kafka, topic: readings, condition: "fields.temp_c > 25", correlate: tags.device_id}
variables:
  - {name: temperature, source: fields.temp_c}
activities:
  - {id: start, type: start}
  - {id: hold, type: timer, duration: 1h}
  - {id: end, type: end}
"""


def readings(first_offset: int, *values: tuple[str, float]) -> list[IncomingMessage]:
    """One message per (device, temperature), at consecutive offsets of partition 0 of `readings`."""
    return [
        IncomingMessage(MessageCoordinate("readings", 0, first_offset + n), orjson.dumps({"tags": {"device_id": d}, "fields": {"temp_c": t}}))
        for n, (d, t) in enumerate(values)
    ]
