"""The T6 benchmark phase on a tiny size against the real servers: it counts what the engine committed."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.windows import window_rate, write_windowed
from benchmarks.workload import produce_backlog
from tests.fixtures.kafka import create_topic
from tests.integration.engine_harness import engine_settings, running_engine, unique

pytestmark = pytest.mark.integration


def test_the_t6_phase_measures_windowed_messages_and_the_state_per_key(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic = unique("bench-window")
    create_topic(kafka_bootstrap, topic)
    produce_backlog(kafka_bootstrap, topic, 1_500)  # devices hp-0 .. hp-999, some twice
    write_windowed(tmp_path, topic)
    with running_engine(engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))):
        measured = window_rate(database_url, 1_500, timeout=60)
    assert measured["rate"] > 0 and measured["keys"] == 1_000
    assert 0 < measured["row_bytes_per_key"] < measured["full_window_bytes_per_key"] * 2
