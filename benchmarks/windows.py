"""T6: windowed variables. Every message updates the 5-minute window of one of 1,000 keys.

The definition starts nothing (its condition never holds), so what is measured is
the window's cost alone: the key's state read in the batch's prefetch, updated, and
written with the batch beside a ledger entry per message. Progress is the ledger's
count of the definition's messages, polled from PostgreSQL (the windows emit no events).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.servers import execute
from process_engine.domain.windows import BUCKETS, Window
from process_engine.engine.windows import add

DEFINITION_ID = "bench-window"
WINDOWED = """\
id: bench-window
name: Benchmark, every message updates a window
trigger:
  type: kafka
  topic: {topic}
  condition: "${{avg_temp}} > 1000"
  correlate: tags.device_id
variables:
  - name: avg_temp
    source: fields.flow_temp_c
    window: {{over: 5m, aggregate: avg}}
activities:
  - id: start
    type: start
  - id: end
    type: end
"""


def write_windowed(folder: Path, topic: str) -> None:
    """The T6 definition, added while the engine runs: it subscribes at its next folder scan."""
    (folder / "bench-window.yaml").write_text(WINDOWED.format(topic=topic), encoding="utf-8")


def counted(database_url: str) -> int:
    """Messages of the T6 definition committed so far."""
    return int(execute(database_url, f"SELECT count(*) FROM trigger_ledger WHERE definition_id = '{DEFINITION_ID}'")[0][0])


def window_rate(database_url: str, count: int, timeout: float = 300, poll: float = 0.2) -> dict[str, Any]:
    """T6: the engine works off `count` messages (already produced); messages/s and the state per key."""
    deadline = time.monotonic() + 120 + timeout  # 120 s: the engine subscribes at its next folder scan
    first: tuple[float, int] | None = None
    while (done := counted(database_url)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"T6: {done} of {count} windowed messages committed")
        if done and first is None:
            first = (time.monotonic(), done)
        time.sleep(poll)
    began, start = first or (time.monotonic() - poll, 0)
    keys, row_bytes = execute(database_url, f"SELECT count(*), avg(pg_column_size(h.*)) FROM trigger_holds AS h WHERE definition_id = '{DEFINITION_ID}'")[0]
    return {
        "rate": (count - start) / max(time.monotonic() - began, 1e-6),
        "count": count,
        "keys": int(keys),
        "row_bytes_per_key": float(row_bytes or 0),
        "full_window_bytes_per_key": full_window_bytes(),
    }


def full_window_bytes() -> int:
    """The JSON size of one key's state once all 60 buckets of its window hold readings (the bound)."""
    window = Window(timedelta(minutes=5), "avg")
    buckets: list = []
    for second in range(300):
        buckets = add(buckets, window, 1_767_225_600_000 + second * 1000, 26.0 + (second % 50) / 10)
    assert len(buckets) == BUCKETS
    return len(json.dumps({"avg_temp": {"w": window.width_ms, "b": buckets}}))
