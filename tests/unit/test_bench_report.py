"""The benchmark's arithmetic: percentiles, rates, the CPU ceiling and the goal verdicts."""

from __future__ import annotations

import pytest

from benchmarks.report import ROWS, batch_rate, cpu_ceiling, percentile, table
from benchmarks.windows import WINDOWED, full_window_bytes
from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.app import definition_extensions


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 0.50), percentile(values, 0.99), percentile(values, 1.0)) == (50, 99, 100)
    assert percentile([], 0.5) == 0.0


def test_batch_rate_counts_from_the_first_commit() -> None:
    assert batch_rate([(10.0, 500), (10.5, 500), (11.0, 500)]) == pytest.approx(1000.0)
    assert batch_rate([(10.0, 500)]) == 0.0


def test_the_cpu_ceiling_is_one_core_of_engine_or_all_cores_shared() -> None:
    shared = {"engine_cpu_us_per_instance": 100.0, "postgres_cpu_us_per_instance": 80.0,
              "broker_cpu_us_per_instance": 20.0, "cores": 2}
    assert cpu_ceiling(shared) == pytest.approx(10_000.0)  # 2 cores / 200 us
    many_cores = {**shared, "cores": 16}
    assert cpu_ceiling(many_cores) == pytest.approx(10_000.0)  # the GIL: 1 core / 100 us
    assert cpu_ceiling({**shared, "engine_cpu_us_per_instance": 50.0, "cores": 16}) == pytest.approx(20_000.0)


def test_the_table_says_which_goals_are_met() -> None:
    values = {key: 1.0 for key, *_ in ROWS}
    values.update({"T1": 12_000.0, "T1/min(B1,B2)": 0.4, "T2 p50": 20.0, "T2 p99": 300.0})
    lines = {line.split("  ")[0].strip(): line for line in table(values).splitlines()[2:]}
    assert lines["T1 end to end, five activities"].endswith("met")
    assert lines["T1 / min(B1, B2)"].endswith("MISSED")
    assert lines["T2 trigger-to-completion p50"].endswith("met")
    assert lines["T2 trigger-to-completion p99"].endswith("MISSED")


def test_the_t6_definition_loads_and_a_full_window_is_small() -> None:

    definition = load_text(WINDOWED.format(topic="t6"), "bench-window.yaml", definition_extensions())
    assert definition.windowed and definition.id == "bench-window"
    assert 1_000 < full_window_bytes() < 8_000  # 60 buckets of 9 numbers: bounded, whatever the rate
