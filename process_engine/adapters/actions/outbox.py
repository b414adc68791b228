"""The outbox worker: delivers committed actions at least once and feeds their outcome back.

An action row is committed with the step that asked for it. As the dispatcher's
`ActionClaimer`, this worker takes the rows a commit writes in that same transaction,
as many as it has idle workers for, and starts them as soon as the commit returns; the
rest it claims (with a lease, so a crashed worker's rows are delivered by another
after the lease). Each runs through the action registry in a small thread pool, and
its outcome is committed as the next step of its instance, using the row up in the
same transaction (on a thread of its own, so claiming never waits for it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from process_engine.adapters.actions.base import ActionContext
from process_engine.adapters.actions.registry import ActionRegistry
from process_engine.domain.errors import ActionError, ProcessEngineError
from process_engine.engine import ActionFailed, ActionSucceeded
from process_engine.ports import ActionClaim, InstanceStore, PendingAction
from process_engine.runtime.dispatcher import Dispatcher, utc_now
from process_engine.runtime.tracing import NoTracing, Tracing

log = logging.getLogger("process_engine.outbox")


MAX_OUTCOMES_PER_COMMIT = 256
STOP_CHECK_SECONDS = 0.2  # how soon the idle outcome thread sees a stop
STOP_HANDOVER_SECONDS = 10.0  # how long a stop waits for a commit that reserved workers to return


@dataclass(frozen=True, slots=True)
class Finished:
    """An action that ran, waiting for its outcome to be committed."""

    action: PendingAction
    outcome: ActionSucceeded | ActionFailed


class OutboxWorker:
    """Claims pending actions and runs them until stopped."""

    def __init__(
        self,
        store: InstanceStore,
        dispatcher: Dispatcher,
        actions: ActionRegistry,
        clock: Callable[[], datetime] = utc_now,
        workers: int = 8,
        batch_size: int = 64,
        lease_seconds: float = 60.0,
        idle_seconds: float = 0.5,
        on_outcome: Callable[[PendingAction, bool], None] | None = None,
        tracing: Tracing | None = None,
        max_unrecorded: int = MAX_OUTCOMES_PER_COMMIT,
    ):
        self.store = store
        self.dispatcher = dispatcher
        self.actions = actions
        self.clock = clock
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.idle_seconds = idle_seconds
        self.on_outcome = on_outcome
        self.tracing: Tracing = tracing if tracing is not None else NoTracing()
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="action")
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._unrecorded = 0  # outcomes queued and not yet recorded
        # Whether the last round may have left claimable rows: only then does a freed
        # worker or a recorded outcome start a claim (at 200 reactions a second the
        # claims that found nothing were a quarter of the engine's GIL time).
        self._left_behind = False
        self._reserved = 0  # slots held for rows a commit under way leases (reserve .. claimed)
        self._stopping = False
        self._settled = threading.Condition(self._lock)  # notified when reservations come back
        self.max_unrecorded = max_unrecorded
        # Outcomes wait here to be committed together: one transaction per batch of
        # actions, not per action, is what lets an MQTT-heavy flow keep up.
        self._outcomes: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self.delivered = 0

    def reserve(self, keys: Sequence[str]) -> ActionClaim | None:
        """As many of these rows as there are workers for, to lease at commit (ports.ActionClaimer)."""
        with self._lock:
            free = self.workers - self._in_flight - self._reserved
            if self._stopping or free <= 0 or self._unrecorded >= self.max_unrecorded:
                return None
            taken = list(keys[:free])
            self._reserved += len(taken)
        return ActionClaim(taken, self.clock(), self.lease_seconds)

    def claimed(self, claim: ActionClaim | None, actions: Sequence[PendingAction], left: int) -> None:
        """Start the rows a commit leased to this worker; wake the claim loop for the ones it did not."""
        with self._lock:
            freed = 0
            if claim is not None:
                self._reserved -= len(claim.keys)
                freed = len(claim.keys) - len(actions)
                self._settled.notify_all()
            self._in_flight += len(actions)
            # Rows of this commit it did not take, or workers it held and gave back while the loop waited for some.
            wake = left > 0 or (freed > 0 and self._left_behind)
        for number, action in enumerate(actions):
            try:
                self.pool.submit(self._deliver_and_free, action)
            except RuntimeError:  # stopped meanwhile: these are delivered when their lease ends
                log.warning("stopping: %d action(s) leased at commit are delivered after their lease", len(actions) - number)
                with self._lock:
                    self._in_flight -= len(actions) - number
                break
        if wake:
            self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set; actions in flight finish first, and their outcomes are recorded.

        Outcomes are committed on a thread of their own: claiming the action a commit
        just asked for must not wait behind the commit of earlier outcomes (at 200
        actions a second that wait was most of the claim stage's tail).
        """
        recorder = threading.Thread(target=self._record_until, args=(stop,), name="outbox-outcomes", daemon=True)
        recorder.start()
        try:
            while not stop.is_set():
                self._wake.clear()  # before claiming: a notice that comes during the claim wakes the next round
                if not self.deliver_once() or not self._left_behind:
                    self._wake.wait(self.idle_seconds)
        finally:
            with self._lock:  # a commit under way may still hand over rows it leased: let it
                self._stopping = True
                self._settled.wait_for(lambda: self._reserved == 0, timeout=STOP_HANDOVER_SECONDS)
            self.pool.shutdown(wait=True)
            recorder.join()
            while self.record_outcomes():  # every outcome left, 256 at a time (each is taken off the queue once)
                pass

    def _record_until(self, stop: threading.Event) -> None:
        """Commit outcomes as they come until `stop` is set (the last ones are `run`'s to record)."""
        while not stop.is_set():
            try:
                first = self._outcomes.get(timeout=min(self.idle_seconds, STOP_CHECK_SECONDS))
            except queue.Empty:
                continue
            try:
                self.record_outcomes(first)
            except Exception:  # a bug here must not stop outcomes for good: the rows are redelivered after their lease
                log.exception("recording action outcomes failed")

    def stop_waiting(self) -> None:
        """Interrupt an idle wait (used when stopping)."""
        self._wake.set()

    def deliver_once(self) -> int:
        """Claim as many actions as there are idle workers and start them; returns how many.

        It does not wait for them to finish: a slow action (a webhook running into
        its timeout) must not hold up the actions committed after it.
        """
        with self._lock:
            idle = self.workers - self._in_flight - self._reserved
            # Claiming waits while recording is a full commit behind: outcomes kept waiting
            # longer would outlive their rows' lease and be delivered again.
            behind = self._unrecorded >= self.max_unrecorded
            self._left_behind = idle <= 0 or behind
            if self._left_behind:
                return 0
            limit = min(self.batch_size, idle)
            self._reserved += limit  # held through the round trip: a commit meanwhile must not take these workers too
        claimed: list[PendingAction] = []
        try:
            claimed = self.store.claim_actions(self.clock(), limit, self.lease_seconds)
        except ProcessEngineError as error:
            log.error("cannot claim actions: %s", error)
        finally:
            with self._lock:
                self._reserved -= limit
                self._in_flight += len(claimed)
                # A full claim may have left rows behind; one that came back short took them all.
                self._left_behind = len(claimed) >= limit
        for action in claimed:
            self.pool.submit(self._deliver_and_free, action)
        return len(claimed)

    def _deliver_and_free(self, action: PendingAction) -> None:
        try:
            self._deliver(action)
        except Exception:  # a bug here must not go unnoticed in a discarded future
            log.exception("delivering %s failed; it is delivered again when its lease ends", action.idempotency_key)
        finally:
            with self._lock:
                self._in_flight -= 1
                more = self._left_behind
            if more:  # a worker is idle and the last claim left rows behind: look for them
                self._wake.set()

    def _deliver(self, action: PendingAction) -> None:
        with self.tracing.action_attempt(action) as attempt:
            outcome = self._attempt(action, attempt.traceparent, attempt.tracestate)
            if isinstance(outcome, ActionFailed):
                attempt.failed(outcome.error)
        with self._lock:
            self._unrecorded += 1
        self._outcomes.put(Finished(action, outcome))

    def _attempt(self, action: PendingAction, traceparent: str | None, tracestate: str | None) -> ActionSucceeded | ActionFailed:
        definition_id = action.definition_id
        context = ActionContext.from_pending(action, definition_id, traceparent, tracestate)
        try:
            result = self.actions.run(action.action, action.config, context)
            outcome: ActionSucceeded | ActionFailed = ActionSucceeded(action.token_id, action.attempt, _jsonable(result))
        except ActionError as error:
            outcome = ActionFailed(action.token_id, action.attempt, str(error), error.retriable)
        except Exception as error:  # a plug-in's bug is a failed attempt, never a dead worker
            log.exception(
                "action %s raised", action.action,
                extra={"instance_id": action.instance_id, "definition_id": definition_id, "activity_id": action.activity_id,
                       "idempotency_key": action.idempotency_key, "action": action.action},
            )
            outcome = ActionFailed(action.token_id, action.attempt, f"{type(error).__name__}: {error}")
        if isinstance(outcome, ActionFailed):
            log.warning(
                "action %s (%s) failed: %s", action.action, action.idempotency_key, outcome.error,
                extra={"instance_id": action.instance_id, "definition_id": definition_id, "activity_id": action.activity_id,
                       "idempotency_key": action.idempotency_key, "action": action.action},
            )
        return outcome

    def record_outcomes(self, first: Finished | None = None) -> int:
        """Commit every outcome waiting (after `first`, taken from the queue already), in one transaction; returns how many."""
        finished: list[Finished] = [first] if first is not None else []
        while len(finished) < MAX_OUTCOMES_PER_COMMIT:
            try:
                finished.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        if not finished:
            return 0
        try:
            self.dispatcher.actions_finished([(f.action, f.outcome) for f in finished])
        except ProcessEngineError as error:
            # The rows stay claimed until their lease ends, then are delivered again: at least once.
            log.error("could not record the outcome of %d action(s): %s", len(finished), error)
            return len(finished)
        finally:
            with self._lock:
                self._unrecorded -= len(finished)
                more = self._left_behind
            if more:  # claiming may have been held back behind these outcomes
                self._wake.set()
        for item in finished:
            self.delivered += 1
            if self.on_outcome is not None:
                self.on_outcome(item.action, isinstance(item.outcome, ActionSucceeded))
        return len(finished)


def _jsonable(result: object) -> object:
    """Keep results that fit in history; drop anything JSON cannot hold."""
    if result is None or isinstance(result, (str, int, float, bool, list, dict)):
        return result
    return str(result)
