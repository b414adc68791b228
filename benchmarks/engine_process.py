"""The engine under test, in a process of its own so its CPU and memory are its own.

Run as `python -m benchmarks.engine_process`, with the engine's settings in the
environment (as `process-engine run` reads them). It prints JSON lines on stdout:
`{"ready": ...}` once the consumer has its partitions, a progress line every 0.2 s,
and, after a `stop` line on stdin, the samples the benchmark computes figures from.
A step listener records each committed step with the time its commit returned.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from process_engine.adapters.observability.logs import configure_logging
from process_engine.app import Engine
from process_engine.ports import Step
from process_engine.service import tune_runtime
from process_engine.settings import Settings

PROGRESS_SECONDS = 0.2


class Recorder:
    """What the benchmark measures, recorded as steps commit (any thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.completed = 0  # bench-five instances completed
        self.seed_waiting = 0  # seed instances that reached their timer
        self.waiting = 0  # bench-wait instances waiting on their timer
        self.latency: list[tuple[float, float]] = []  # (sent_at, committed) of bench-five
        self.batches: list[tuple[float, int]] = []  # (committed, bench-five completed in it)
        self.seed_batches: list[tuple[float, int]] = []
        self.fired: list[tuple[str, float]] = []  # (timer id, committed)
        self.held = 0  # bench-hold messages that opened or updated their key's hold

    def steps(self, steps: list[Step]) -> None:
        """The step listener."""
        now = time.time()
        completed = seed = waiting = 0
        latency = []
        fired = []
        for step in steps:
            instance = step.instance
            if step.consumed_timer is not None:
                fired.append((step.consumed_timer, now))
            if instance.definition_id == "bench-five":
                if instance.status == "completed":
                    completed += 1
                    latency.append((instance.variables.get("sent_at", now), now))
            elif instance.definition_id == "temperature-control":
                seed += instance.current_activity == "wait_recheck" and step.consumed_action is not None
            elif instance.definition_id == "bench-wait":
                waiting += step.expected_version is None and instance.current_activity == "hold"
        with self.lock:
            self.completed += completed
            self.seed_waiting += seed
            self.waiting += waiting
            self.latency.extend(latency)
            self.fired.extend(fired)
            if completed:
                self.batches.append((now, completed))
            if seed:
                self.seed_batches.append((now, seed))

    def holds(self, events: list[Any]) -> None:
        """The hold listener: messages held, committed."""
        held = sum(1 for e in events if e.definition_id == "bench-hold" and e.kind in ("opened", "held"))
        with self.lock:
            self.held += held

    def progress(self) -> dict[str, Any]:
        """Counters so far."""
        with self.lock:
            return {
                "t": time.time(),
                "completed": self.completed,
                "seed_waiting": self.seed_waiting,
                "waiting": self.waiting,
                "fired": len(self.fired),
                "held": self.held,
            }

    def samples(self) -> dict[str, Any]:
        """Everything recorded."""
        with self.lock:
            return {
                "latency": self.latency,
                "batches": self.batches,
                "seed_batches": self.seed_batches,
                "fired": self.fired,
            }


def emit(line: dict[str, Any]) -> None:
    """One JSON line to the benchmark."""
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def report_progress(recorder: Recorder, stop: threading.Event) -> None:
    """Counters every PROGRESS_SECONDS until stopped."""
    while not stop.wait(PROGRESS_SECONDS):
        emit({"progress": recorder.progress()})


def main() -> int:
    """Run the engine until `stop` arrives on stdin."""
    settings = Settings.from_environ(os.environ)
    configure_logging(settings.log_level, settings.log_format)
    recorder = Recorder()
    engine = Engine(settings)
    engine.step_listeners.append(recorder.steps)
    engine.hold_listeners.append(recorder.holds)
    engine.build()
    engine.start()
    tune_runtime()  # as `process-engine run` does
    deadline = time.monotonic() + 60
    while not engine.consumer.assigned and time.monotonic() < deadline:
        time.sleep(0.05)
    emit({"ready": {"pid": os.getpid(), "assigned": len(engine.consumer.assigned)}})
    stop = threading.Event()
    threading.Thread(target=report_progress, args=(recorder, stop), daemon=True).start()
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()
    engine.stop()
    emit({"samples": recorder.samples()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
