"""`make bench`: throughput, latency, timers and memory against the machine's own limits.

Starts the servers the tests use (PostgreSQL, Tansu, Mosquitto), measures the raw
limits (B1 Kafka consume, B2 binary COPY of the engine's rows) and the seed's naive
design (B4), then runs the real engine (TriggerConsumer, Dispatcher,
PostgresInstanceStore, TimerService, outbox) in a child process for T1-T5. Prints a
table, writes JSON under benchmarks/results/ and a plot for the README.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from typing import Any

from benchmarks import phases, raw, report, telemetry, tracing_cost, windows
from benchmarks.engine_control import EngineProcess
from benchmarks.servers import Stack
from benchmarks.workload import produce_backlog, write_definitions, write_holding


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark once; exit 0 when they ran (goals are reported, not enforced)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 40 s), for a quick check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = phases.QUICK if args.quick else phases.Sizes()
    began = time.monotonic()
    stack = Stack().start()
    try:
        measured, samples = run(stack, sizes)
    finally:
        stack.stop()
    values = report.figures(measured, samples)
    print(report.table(values))
    details = {"sizes": sizes.__dict__, "seconds": round(time.monotonic() - began, 1),
               **{k: v for k, v in measured.items() if k not in ("T3", "S3 on", "S3 off", "T1 traced")}, "T3 pending": measured["T3"]["pending"],
               "T1 traced": {k: v for k, v in measured["T1 traced"].items() if k != "batches"}}
    path = report.write_json(values, details, args.quick)
    plot = report.RESULTS / "throughput_latency.png"
    report.plot(values, samples, measured, plot)
    if not args.quick:
        report.plot(values, samples, measured, report.DOCS_PLOT)
    print(f"\nwritten: {path}, {plot}{'' if args.quick else f', {report.DOCS_PLOT}'} ({time.monotonic() - began:.0f} s)")
    return 0


def step(name: str) -> None:
    """Progress on stderr, so the table stays clean on stdout."""
    print(f"[bench] {name}", file=sys.stderr, flush=True)


def run(stack: Stack, sizes: phases.Sizes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every phase in order; returns what each measured and the engine's samples."""
    suffix = uuid.uuid4().hex[:6]
    topics = phases.Topics(f"bench-five-{suffix}", f"bench-seed-{suffix}", f"bench-wait-{suffix}", f"bench-hold-{suffix}", f"bench-window-{suffix}")
    screen_topic, refresh_topic = f"bench-screen-{suffix}", f"bench-refresh-{suffix}"
    for topic in (topics.five, topics.seed, topics.wait, topics.hold, topics.window, screen_topic, refresh_topic):
        stack.topic(topic, 4)
    folder = stack.workdir / "processes"
    write_definitions(folder, topics.five, topics.seed, topics.wait)
    five = folder / "bench-five.yaml"
    measured: dict[str, Any] = {}

    step(f"producing {sizes.backlog:,} messages")
    measured["produce rate"] = produce_backlog(stack.bootstrap, topics.five, sizes.backlog)
    step("B1 raw consume")
    measured["B1"] = raw.consume_rate(stack.bootstrap, topics.five, sizes.backlog, sizes.batch_size)
    step("B2 raw COPY")
    copy_url = stack.database()
    raw.register(copy_url, five)
    plan = raw.engine_plan(five, topics.five, sizes.batch_size)
    measured["B2"], measured["B2 rows per instance"] = raw.write_rate(copy_url, raw.copy_batches(plan, sizes.copy_instances // sizes.batch_size))
    step("B4 seed design")
    naive_url = stack.database()
    raw.register(naive_url, five)
    measured["B4"], _ = raw.naive_rate(naive_url, stack.bootstrap, topics.five, sizes.naive_seconds)

    engine_url = stack.database()
    environ = {
        "DATABASE_URL": engine_url, "REDPANDA_BROKERS": stack.bootstrap, "MQTT_URL": stack.mqtt_url,
        "PROCESS_ENGINE_GROUP_ID": f"bench-{suffix}", "PROCESS_DEFINITIONS_PATH": str(folder),
        "PROCESS_ENGINE_HTTP_ADDR": "127.0.0.1:0", "PROCESS_ENGINE_BATCH_SIZE": str(sizes.batch_size),
        "LOG_LEVEL": "WARNING",
    }
    engine = EngineProcess(environ, stack.workdir / "engine.log")
    try:
        step("engine joining its consumer group")
        engine.wait_ready()
        step(f"T1 five activities ({sizes.backlog:,} waiting in Kafka)")
        measured["T1"] = phases.drain_backlog(engine, sizes.backlog, stack.postgres_pid, stack.broker_pid)
        rate = measured["T1"]["rough_rate"] / 2
        step(f"T2 latency at {rate:,.0f} msg/s for {sizes.latency_seconds:.0f} s")
        measured["T2"] = phases.paced_latency(engine, stack.bootstrap, topics.five, rate, sizes.latency_seconds)
        step(f"T1 seed example to its timer ({sizes.seed:,})")
        measured["T1 seed"] = phases.seed_hot_path(engine, stack.bootstrap, topics.seed, sizes.seed)
        step(f"T3 timers ({sizes.timers:,} pending, {sizes.timers_due:,} due within {sizes.timer_window:.0f} s)")
        measured["T3"] = phases.timer_lateness(engine, engine_url, folder / "bench-wait.yaml", sizes)
        step(f"T4 memory ({sizes.waiting:,} waiting instances)")
        measured["T4"] = phases.waiting_memory(engine, stack.bootstrap, topics.wait, engine_url, sizes.waiting)
        step(f"T5 every key holding ({sizes.holding:,} messages over 1,000 keys)")
        # Produced and read raw before the engine knows the topic, so neither shares the
        # machine with the other; the engine then subscribes and works off the backlog.
        produce_backlog(stack.bootstrap, topics.hold, sizes.holding)  # devices hp-0 .. hp-999
        measured["T5 raw"] = raw.consume_rate(stack.bootstrap, topics.hold, sizes.holding, sizes.batch_size)
        write_holding(folder, topics.hold)
        measured["T5"] = phases.holding_rate(engine, sizes.holding)
        group = environ["PROCESS_ENGINE_GROUP_ID"]
        step(f"S1 screening ({sizes.screening:,} messages, condition false, 1,000 keys)")
        measured["S1"] = telemetry.screening(stack.bootstrap, group, folder, screen_topic, sizes.screening, sizes.batch_size)
        step(f"S2 refresh ({sizes.refreshes:,} readings for {sizes.refresh_keys:,} waiting instances)")
        measured["S2"] = telemetry.refresh(stack.bootstrap, group, folder, refresh_topic, engine_url, sizes.refresh_keys,
                                           sizes.refreshes, sizes.batch_size)
        step(f"T6 every message updates a window ({sizes.windowed:,} messages over 1,000 keys)")
        produce_backlog(stack.bootstrap, topics.window, sizes.windowed)  # as T5: produced and read raw first
        measured["T6 raw"] = raw.consume_rate(stack.bootstrap, topics.window, sizes.windowed, sizes.batch_size)
        windows.write_windowed(folder, topics.window)
        measured["T6"] = windows.window_rate(engine_url, sizes.windowed)
        samples = engine.stop()
    finally:
        engine.kill()
    measured["S2"]["rows_per_refresh_live"] = telemetry.rows_per_refresh_at_one_per_second()
    step(f"T1 with tracing on, spans to an OTLP/HTTP receiver ({sizes.backlog:,} waiting in Kafka)")
    traced_topic = f"bench-traced-{suffix}"
    stack.topic(traced_topic, 4)
    measured["T1 traced"] = tracing_cost.traced_drain(
        stack.bootstrap, stack.mqtt_url, stack.database(), stack.workdir, traced_topic, f"bench-traced-{suffix}",
        sizes.backlog, sizes.batch_size, stack.postgres_pid, stack.broker_pid,
    )
    for setting in ("on", "off"):
        step(f"S3 reaction, Kafka to MQTT, at 20 and 200 msg/s (synchronous_commit={setting})")
        measured[f"S3 {setting}"] = telemetry.reaction(stack.bootstrap, stack.mqtt_url, stack.database(), stack.workdir,
                                                       (20.0, 200.0), sizes.reaction_seconds, setting)
    return measured, samples


if __name__ == "__main__":
    sys.exit(main())
