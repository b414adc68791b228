"""Figures from the samples, the table, the JSON file and the plot."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DOCS_PLOT = Path(__file__).resolve().parents[1] / "docs" / "benchmark.png"

# Whether each goal is met, by figure.
GOALS = {
    "T1": lambda f: f["T1"] >= 7_500,
    "T1/min(B1,B2)": lambda f: f["T1/min(B1,B2)"] >= 0.5,
    "T2 p50": lambda f: f["T2 p50"] <= 50,
    "T2 p99": lambda f: f["T2 p99"] <= 250,
    "T3 p99": lambda f: f["T3 p99"] <= 100,
    "T3 max": lambda f: f["T3 max"] <= 500,
    "T4 engine": lambda f: f["T4 engine"] <= 2048,
    "S1/raw": lambda f: f["S1/raw"] >= 0.5,
    "S2/raw": lambda f: f["S2/raw"] >= 0.3,
    "S2 rows live": lambda f: f["S2 rows live"] <= 0.05,
    "S3 20 p99": lambda f: f["S3 20 p99"] <= 15,
    "S3 200 p99": lambda f: f["S3 200 p99"] <= 25,
}
ROWS = (
    ("B1", "B1 raw Kafka consume", "msg/s", ""),
    ("B2", "B2 raw binary COPY of the engine's rows", "inst/s", ""),
    ("B4", "B4 seed design (autocommit per statement)", "inst/s", "floor"),
    ("T1", "T1 end to end, five activities", "inst/s", ">= 7,500 (stretch 10,000)"),
    ("T1 cpu", "   engine CPU per instance", "us", ""),
    ("T1 db cpu", "   PostgreSQL CPU per instance", "us", ""),
    ("T1 broker cpu", "   broker CPU per instance", "us", ""),
    ("T1 busy", "   engine process busy (cores)", "", ""),
    ("T1 ceiling", "   CPU ceiling: min(1 core / engine, cores / all)", "inst/s", "(what bounds T1)"),
    ("T1 seed", "T1 end to end, seed example to its timer", "inst/s", ""),
    ("T1/B1", "T1 / B1", "", ""),
    ("T1/min(B1,B2)", "T1 / min(B1, B2)", "", ">= 0.5"),
    ("T1/B4", "T1 / B4", "", ""),
    ("T1 traced", "T1 with tracing on (OTLP/HTTP to loopback)", "inst/s", "(T1 is tracing off)"),
    ("T1 traced cpu", "   engine CPU per instance", "us", ""),
    ("T1 traced spans", "   spans exported per instance", "", "(dropped when the SDK queue is full)"),
    ("T2 rate", "T2 paced rate (half of T1)", "msg/s", ""),
    ("T2 p50", "T2 trigger-to-completion p50", "ms", "<= 50"),
    ("T2 p99", "T2 trigger-to-completion p99", "ms", "<= 250"),
    ("T3 p50", "T3 timer lateness p50", "ms", ""),
    ("T3 p99", "T3 timer lateness p99", "ms", "<= 100"),
    ("T3 max", "T3 timer lateness max", "ms", "<= 500"),
    ("T4 engine", "T4 engine RSS growth per waiting instance", "bytes", "<= 2,048"),
    ("T4 db", "T4 PostgreSQL bytes per waiting instance", "bytes", "(context)"),
    ("T5", "T5 every key holding (for: 1h)", "msg/s", ""),
    ("T5 raw", "   raw Kafka consume of the same topic", "msg/s", ""),
    ("T5/raw", "T5 / its raw consume", "", "(the cost of holds)"),
    ("S1", "S1 screening (condition false, 1,000 keys)", "msg/s", ""),
    ("S1 raw", "   raw consume + decode + compare, best of 3", "msg/s", ""),
    ("S1 raw slowest", "   the slowest of those 3 raw runs", "msg/s", "(context)"),
    ("S1/raw", "S1 / its raw", "", ">= 0.5"),
    ("S2", "S2 refresh of waiting instances", "msg/s", ""),
    ("S2 raw", "   raw consume + decode + compare, best of 3", "msg/s", ""),
    ("S2 raw slowest", "   the slowest of those 3 raw runs", "msg/s", "(context)"),
    ("S2/raw", "S2 / its raw", "", ">= 0.3"),
    ("S2 rows", "S2 history rows per refresh (backlog)", "", "(context)"),
    ("S2 rows live", "S2 history rows per refresh at 1 msg/s per key", "", "<= 0.05"),
    ("S3 20 p50", "S3 Kafka to MQTT p50 at 20 msg/s", "ms", "(synchronous_commit on)"),
    ("S3 20 p99", "S3 Kafka to MQTT p99 at 20 msg/s", "ms", "<= 15"),
    ("S3 200 p50", "S3 Kafka to MQTT p50 at 200 msg/s", "ms", ""),
    ("S3 200 p99", "S3 Kafka to MQTT p99 at 200 msg/s", "ms", "<= 25"),
    ("S3 off 20 p99", "   p99 at 20 msg/s, synchronous_commit off", "ms", "(context)"),
    ("S3 off 200 p99", "   p99 at 200 msg/s, synchronous_commit off", "ms", "(context)"),
    ("T6", "T6 every message updates a window (5m avg)", "msg/s", ""),
    ("T6 raw", "   raw Kafka consume of the same topic", "msg/s", ""),
    ("T6 key", "T6 stored state per key, full 60 buckets", "bytes", "(bounded)"),
)


def cpu_ceiling(t1: dict[str, Any]) -> float:
    """The rate the measured CPU per instance allows on this machine.

    The engine's Python runs on one core at a time (the GIL), and the engine,
    PostgreSQL and the broker share the machine's cores: T1 can pass neither bound.
    """
    engine = t1["engine_cpu_us_per_instance"]
    everything = engine + t1["postgres_cpu_us_per_instance"] + t1["broker_cpu_us_per_instance"]
    return min(1e6 / engine, t1["cores"] * 1e6 / everything)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def batch_rate(batches: Sequence[Sequence[float]]) -> float:
    """Instances per second from (commit time, instances) pairs, timed from the first commit."""
    if len(batches) < 2:
        return 0.0
    total = sum(n for _, n in batches) - batches[0][1]
    return total / max(batches[-1][0] - batches[0][0], 1e-6)


def figures(measured: dict[str, Any], samples: dict[str, Any]) -> dict[str, float]:
    """Every figure of the table from the phase results and the engine's samples."""
    t2_since = measured["T2"]["since"]
    t1_batches = [b for b in samples["batches"] if b[0] < t2_since]
    latency = [(committed - sent) * 1000 for sent, committed in samples["latency"] if sent >= t2_since]
    fired = dict(samples["fired"])
    due = measured["T3"]["due"]
    lateness = [(fired[t] - at.timestamp()) * 1000 for t, at in due.items() if t in fired]
    b1, b2, b4 = measured["B1"], measured["B2"], measured["B4"]
    t1 = batch_rate(t1_batches)
    return {
        "B1": b1, "B2": b2, "B4": b4, "T1": t1,
        "T1 cpu": measured["T1"]["engine_cpu_us_per_instance"],
        "T1 db cpu": measured["T1"]["postgres_cpu_us_per_instance"],
        "T1 broker cpu": measured["T1"]["broker_cpu_us_per_instance"],
        "T1 busy": measured["T1"]["engine_cores_busy"],
        "T1 ceiling": cpu_ceiling(measured["T1"]),
        "T1 seed": measured["T1 seed"]["rate"],
        "T1/B1": t1 / b1, "T1/min(B1,B2)": t1 / min(b1, b2), "T1/B4": t1 / b4,
        "T1 traced": batch_rate(measured["T1 traced"]["batches"]),
        "T1 traced cpu": measured["T1 traced"]["engine_cpu_us_per_instance"],
        "T1 traced spans": measured["T1 traced"]["spans"] / max(sum(n for _, n in measured["T1 traced"]["batches"]), 1),
        "T2 rate": measured["T2"]["rate"],
        "T2 p50": percentile(latency, 0.50), "T2 p99": percentile(latency, 0.99),
        "T3 p50": percentile(lateness, 0.50), "T3 p99": percentile(lateness, 0.99),
        "T3 max": max(lateness, default=0.0),
        "T4 engine": measured["T4"]["rss_per_instance"], "T4 db": measured["T4"]["db_per_instance"],
        "T5": measured["T5"]["rate"], "T5 raw": measured["T5 raw"],
        "T5/raw": measured["T5"]["rate"] / measured["T5 raw"],
        "S1": measured["S1"]["rate"], "S1 raw": measured["S1"]["raw"], "S1/raw": measured["S1"]["rate"] / measured["S1"]["raw"],
        "S1 raw slowest": min(measured["S1"]["raw_runs"]), "S2 raw slowest": min(measured["S2"]["raw_runs"]),
        "S2": measured["S2"]["rate"], "S2 raw": measured["S2"]["raw"], "S2/raw": measured["S2"]["rate"] / measured["S2"]["raw"],
        "S2 rows": measured["S2"]["rows_per_refresh"], "S2 rows live": measured["S2"]["rows_per_refresh_live"],
        **{f"S3 {rate} p{p}": percentile(measured["S3 on"][rate], p / 100) for rate in ("20", "200") for p in (50, 99)},
        **{f"S3 off {rate} p99": percentile(measured["S3 off"][rate], 0.99) for rate in ("20", "200")},
        "T6": measured["T6"]["rate"], "T6 raw": measured["T6 raw"], "T6 key": measured["T6"]["full_window_bytes_per_key"],
    }


def table(values: dict[str, float]) -> str:
    """The figures as a fixed-width table, with each goal and whether it is met."""
    lines = [f"{'figure':<46} {'value':>12}  {'unit':<6} goal", "-" * 88]
    for key, label, unit, goal in ROWS:
        value = values[key]
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        verdict = ""
        if key in GOALS:
            verdict = "  met" if GOALS[key](values) else "  MISSED"
        lines.append(f"{label:<46} {text:>12}  {unit:<6} {goal}{verdict}")
    return "\n".join(lines)


def write_json(values: dict[str, float], details: dict[str, Any], quick: bool) -> Path:
    """The figures and run details under benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"bench-{'quick-' if quick else ''}{stamp}.json"
    document = {
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        "figures": values,
        "goals_met": {key: bool(check(values)) for key, check in GOALS.items()},
        "details": details,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def plot(values: dict[str, float], samples: dict[str, Any], measured: dict[str, Any], path: Path) -> None:
    """Throughput bars, T1's completions over time, and latency distributions (T2, T3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, timeline, latency) = plt.subplots(1, 3, figsize=(16, 4.8))
    _throughput_bars(bars, values)
    _timeline(timeline, samples, measured["T2"]["since"])
    _latency(latency, samples, measured)
    figure.suptitle(f"process-engine on {_cpus()} cores: PostgreSQL, Tansu (Kafka API), Mosquitto on one machine")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _throughput_bars(axes: Any, values: dict[str, float]) -> None:
    names = ["B1 raw consume", "B2 raw COPY", "T1 five activities", "T1 seed to timer", "B4 seed design"]
    keys = ["B1", "B2", "T1", "T1 seed", "B4"]
    colours = ["#999999", "#999999", "#1f77b4", "#6baed6", "#d62728"]
    axes.barh(names[::-1], [values[k] for k in keys][::-1], color=colours[::-1])
    axes.set_xscale("log")
    axes.axvline(10_000, color="green", linestyle="--", label="goal 10,000/s")
    axes.set_xlabel("per second (log scale)")
    axes.set_title("Throughput")
    axes.legend(loc="lower right")


def _timeline(axes: Any, samples: dict[str, Any], t2_since: float) -> None:
    batches = samples["batches"]
    if not batches:
        return
    start = batches[0][0]
    per_second: dict[int, int] = {}
    for committed, count in batches:
        per_second[int(committed - start)] = per_second.get(int(committed - start), 0) + count
    seconds = sorted(per_second)
    axes.plot(seconds, [per_second[s] for s in seconds], drawstyle="steps-post")
    axes.axvline(t2_since - start, color="grey", linestyle=":", label="T2 paced load starts")
    axes.set_xlabel("seconds since the first commit")
    axes.set_ylabel("instances completed per second")
    axes.set_title("T1 backlog, then T2 at half rate")
    axes.legend(loc="upper right")


def _latency(axes: Any, samples: dict[str, Any], measured: dict[str, Any]) -> None:
    t2_since = measured["T2"]["since"]
    latency = sorted((c - s) * 1000 for s, c in samples["latency"] if s >= t2_since)
    fired = dict(samples["fired"])
    lateness = sorted((fired[t] - at.timestamp()) * 1000 for t, at in measured["T3"]["due"].items() if t in fired)
    for values, label in ((latency, "T2 trigger to completion"), (lateness, "T3 timer lateness")):
        if values:
            axes.plot(values, [i / len(values) for i in range(1, len(values) + 1)], label=label)
    axes.set_xscale("log")
    axes.set_xlabel("milliseconds (log scale)")
    axes.set_ylabel("fraction of instances / timers")
    axes.set_title("Latency (cumulative)")
    axes.axvline(250, color="green", linestyle="--", linewidth=0.8, label="T2 p99 goal 250 ms")
    axes.axvline(100, color="olive", linestyle="--", linewidth=0.8, label="T3 p99 goal 100 ms")
    axes.legend(loc="lower right")
