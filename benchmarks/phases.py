"""T1-T4: the engine under test, fed through Kafka, one phase after another."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.engine_control import EngineProcess
from benchmarks.servers import execute
from benchmarks.timer_rows import insert_pending_timers
from benchmarks.workload import produce_backlog, produce_paced


@dataclass(frozen=True)
class Sizes:
    """How much each phase does; `--quick` uses smaller ones."""

    backlog: int = 60_000  # B1, T1 (five activities)
    copy_instances: int = 40_000  # B2
    naive_seconds: float = 3.0  # B4
    latency_seconds: float = 10.0  # T2
    seed: int = 4_000  # T1 for the seed's hot path
    timers: int = 100_000  # T3 pending
    timers_due: int = 20_000  # T3 due within the run
    timer_window: float = 10.0
    waiting: int = 100_000  # T4
    batch_size: int = 500
    holding: int = 40_000  # T5, over 1,000 keys that all hold
    screening: int = 200_000  # S1, condition false, 1,000 keys
    refresh_keys: int = 500  # S2 waiting instances
    refreshes: int = 50_000  # S2 readings for them
    reaction_seconds: float = 10.0  # S3, at each rate
    windowed: int = 40_000  # T6, each updating the window of one of 1,000 keys


QUICK = Sizes(
    backlog=10_000, copy_instances=10_000, naive_seconds=1.0, latency_seconds=4.0, seed=1_000,
    timers=10_000, timers_due=2_000, timer_window=3.0, waiting=10_000, holding=6_000,
    screening=20_000, refresh_keys=100, refreshes=5_000, reaction_seconds=3.0, windowed=6_000,
)


@dataclass
class Topics:
    """The three trigger topics."""

    five: str
    seed: str
    wait: str
    hold: str = ""
    window: str = ""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ = 100)


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and its children (PostgreSQL: the postmaster and its backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == root or stat.parent.name == str(root):  # fields[1] is the parent pid
            total += (int(fields[11]) + int(fields[12])) / 100
    return total


def drain_backlog(engine: EngineProcess, count: int, postgres_pid: int, broker_pid: int) -> dict[str, Any]:
    """T1: the engine works off `count` produced messages; timed by the progress lines.

    Also the CPU the engine, PostgreSQL and the broker spent per instance, and the
    engine's share of one core: what bounds the rate.
    """
    pid = engine.process.pid
    first = engine.wait(lambda: engine.progress if engine.progress.get("completed", 0) > 0 else None, 120, "its first batch")
    before = cpu_seconds(pid), tree_cpu_seconds(postgres_pid), tree_cpu_seconds(broker_pid)
    began = time.time()
    last = engine.wait_count("completed", count, 600)
    after = cpu_seconds(pid), tree_cpu_seconds(postgres_pid), tree_cpu_seconds(broker_pid)
    elapsed = time.time() - began
    cpu, db, broker = (end - start for start, end in zip(before, after))
    done = last["completed"] - first["completed"]
    return {
        "rough_rate": done / max(last["t"] - first["t"], 1e-6),
        "engine_cpu_us_per_instance": cpu / done * 1e6,
        "postgres_cpu_us_per_instance": db / done * 1e6,
        "broker_cpu_us_per_instance": broker / done * 1e6,
        "engine_cores_busy": cpu / elapsed,
        "postgres_cores_busy": db / elapsed,
        "cores": os.cpu_count() or 1,
    }


def paced_latency(engine: EngineProcess, bootstrap: str, topic: str, rate: float, seconds: float) -> dict[str, Any]:
    """T2: produce at `rate` with the produce time in each message; wait until all completed."""
    done_before = engine.progress.get("completed", 0)
    began = time.time()
    sent = produce_paced(bootstrap, topic, rate, seconds)
    engine.wait_count("completed", done_before + sent, 120)
    return {"rate": rate, "sent": sent, "since": began}


def seed_hot_path(engine: EngineProcess, bootstrap: str, topic: str, count: int) -> dict[str, Any]:
    """T1, seed example: messages to instances waiting on `wait_recheck` (MQTT publish via the outbox)."""
    began = time.time()
    produce_backlog(bootstrap, topic, count, device_prefix="seed-")
    last = engine.wait_count("seed_waiting", count, 120)
    return {"rate": count / (last["t"] - began), "count": count}


def timer_lateness(engine: EngineProcess, database_url: str, definition: Path, sizes: Sizes) -> dict[str, Any]:
    """T3: pending timers written with COPY, fired by the engine's TimerService."""
    fired_before = engine.progress.get("fired", 0)
    began = time.perf_counter()
    due = insert_pending_timers(database_url, definition, sizes.timers, sizes.timers_due, 2.0, sizes.timer_window)
    insert_seconds = time.perf_counter() - began
    engine.wait_count("fired", fired_before + len(due), sizes.timer_window + 60)
    return {"due": due, "insert_seconds": insert_seconds, "pending": sizes.timers}


RELATIONS = ("process_instances", "process_history", "process_timers", "trigger_ledger")


def relation_bytes(database_url: str) -> int:
    """Bytes the engine's tables take, indexes and TOAST included."""
    sizes = ", ".join(f"pg_total_relation_size('{name}')" for name in RELATIONS)
    return int(sum(execute(database_url, f"SELECT {sizes}")[0]))


def waiting_memory(engine: EngineProcess, bootstrap: str, topic: str, database_url: str, count: int) -> dict[str, Any]:
    """T4: engine RSS and table bytes before and after `count` instances come to wait on a timer."""
    waiting_before = engine.progress.get("waiting", 0)
    time.sleep(0.5)
    rss_before, disk_before = engine.rss_bytes(), relation_bytes(database_url)
    produce_backlog(bootstrap, topic, count, device_prefix="waiting-")
    engine.wait_count("waiting", waiting_before + count, 300)
    time.sleep(0.5)
    rss_after, disk_after = engine.rss_bytes(), relation_bytes(database_url)
    return {
        "count": count,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_per_instance": (rss_after - rss_before) / count,
        "db_per_instance": (disk_after - disk_before) / count,
    }


def holding_rate(engine: EngineProcess, count: int, timeout: float = 300) -> dict[str, Any]:
    """T5: the engine works off `count` messages (already produced) on a topic where every key holds.

    None starts an instance: each opens or updates its key's hold, read and written
    with its batch. Timed by the progress lines, as T1 is.
    """
    # 120 s: the engine subscribes to the topic at its next folder scan, then joins the group again.
    first = engine.wait(lambda: engine.progress if engine.progress.get("held", 0) > 0 else None, 120, "its first held message")
    last = engine.wait_count("held", count, timeout)
    done = last["held"] - first["held"]
    return {"rate": done / max(last["t"] - first["t"], 1e-6), "count": count}
