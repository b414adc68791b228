"""The outbox stops claiming while recording is behind, and records every outcome left when it stops.

Outcomes are committed on a thread of their own; when a full commit's worth waits
unrecorded, claiming waits instead of running actions whose outcomes would outlive
their row's lease.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

from process_engine.adapters.actions.outbox import OutboxWorker
from process_engine.adapters.actions.registry import ActionRegistry
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.domain.instance import InstanceState
from process_engine.engine import RunAction
from process_engine.ports import Step, StoredDefinition

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


class Note:
    """An action that only counts its runs."""

    name = "note"

    def __init__(self) -> None:
        self.runs = 0

    def run(self, config: dict, context: object) -> None:
        self.runs += 1


class Recorder:
    """The dispatcher's side of outcomes: keeps them, and holds each commit until let go."""

    def __init__(self) -> None:
        self.recorded: list[str] = []
        self.go = threading.Event()

    def actions_finished(self, finished: list) -> None:
        assert self.go.wait(10), "the test never let recording go on"
        self.recorded += [action.idempotency_key for action, _ in finished]


def make(actions: int, workers: int, max_unrecorded: int = 256) -> tuple[OutboxWorker, Recorder, Note]:
    store = MemoryInstanceStore()
    store.save_definition(StoredDefinition("flow", 1, "Flow", {}, "hash-1"))
    for n in range(actions):
        state = InstanceState(f"00000000-0000-4000-8000-{n:012d}", "flow", 1, started_at=T0)
        store.commit([Step(state, None, (RunAction(f"{state.id}:note:1", "t1", "note", "note", {}, 1),))])
    note, recorder = Note(), Recorder()
    worker = OutboxWorker(store, recorder, ActionRegistry([note]), clock=lambda: T0, workers=workers, idle_seconds=0.05,
                          max_unrecorded=max_unrecorded)
    return worker, recorder, note


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_claiming_waits_while_recording_is_behind() -> None:
    worker, recorder, note = make(actions=10, workers=4, max_unrecorded=3)
    assert worker.deliver_once() == 4
    wait_for(lambda: note.runs == 4)
    assert worker.deliver_once() == 0  # four ran, none recorded: behind, though every worker is idle
    recorder.go.set()
    assert worker.record_outcomes() == 4
    assert worker.deliver_once() == 4  # caught up: claiming goes on
    worker.pool.shutdown(wait=True)
    assert len(recorder.recorded) == 4 and note.runs == 8


def test_stopping_records_every_outcome_left_however_many() -> None:
    worker, recorder, note = make(actions=300, workers=300)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    wait_for(lambda: note.runs == 300)
    stop.set()  # the recorder is held: all 300 outcomes are still waiting
    recorder.go.set()
    runner.join(30)
    assert not runner.is_alive()
    assert sorted(recorder.recorded) == sorted(f"00000000-0000-4000-8000-{n:012d}:note:1" for n in range(300))
