"""Telemetry holds on the in-memory store with a hand-moved clock: `for`, `count`/`within`, `cooldown`."""

from __future__ import annotations

import itertools
import json
import logging
from datetime import timedelta

import pytest

from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.engine import Cancel, Fail
from process_engine.engine.holds import HoldEvent
from process_engine.ports import IncomingMessage, InstanceQuery, MessageCoordinate
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry
from tests.unit.test_definition_validation import errors_of
from tests.unit.test_dispatcher import T0, Clock
from tests.unit.walking import definition_from

RULES = """
id: hot
trigger: {type: kafka, topic: temps, condition: "fields.temp > 25", correlate: tags.id, RULES}
variables:
  - {name: temp, source: fields.temp}
activities:
  - {id: start, type: start}
  - {id: cool_down, type: wait, condition: "${temp} < 5", timeout: 1h}
  - {id: done, type: end}
"""


def hot(rules: str, definition_id: str = "hot"):
    """The `hot` definition with these rules; another id listens on a topic of its own."""
    text = RULES.replace("RULES", rules).replace("id: hot", f"id: {definition_id}")
    return definition_from(text if definition_id == "hot" else text.replace("topic: temps", f"topic: {definition_id}"))


class Harness:
    """The dispatcher on the memory store, with the events its hold rules report."""

    def __init__(self, *definitions, clock: Clock | None = None):
        self.clock = clock or Clock()
        self.store = MemoryInstanceStore(clock=self.clock)
        self.registry = DefinitionRegistry(self.store)
        self.registry.activate(definitions)
        self.events: list[HoldEvent] = []
        ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
        self.dispatcher = Dispatcher(self.store, self.registry, clock=self.clock, new_id=lambda: next(ids), on_holds=self.events.extend)
        self.offsets = itertools.count()

    def send(self, temp: float, key: str = "fz-1", after: timedelta = timedelta(0), offset: int | None = None) -> list[str]:
        """Let `after` pass (completing due holds at its end, as the sweep does), then deliver one reading."""
        if after:
            self.wait(after)
        value = json.dumps({"tags": {"id": key}, "fields": {"temp": temp}}).encode()
        coordinate = MessageCoordinate("temps", 0, next(self.offsets) if offset is None else offset)
        return self.dispatcher.handle_batch([IncomingMessage(coordinate, value)]).started

    def wait(self, span: timedelta) -> list[str]:
        """Move the clock and complete every hold due by then; the ids started."""
        self.clock.now += span
        return self.dispatcher.fire_holds(self.store.claim_due_holds(self.clock.now, 100, 30))

    def instances(self, key: str | None = None):
        extra = {"correlation_key": key} if key else {}
        return self.store.find_instances(InstanceQuery(extra=extra))

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.kind, e.reason) for e in self.events]


MINUTE = timedelta(minutes=1)


# --- for -------------------------------------------------------------------------


def test_a_hold_completes_on_time_with_the_latest_variables() -> None:
    h = Harness(hot("for: 5m"))
    assert h.send(30) == [] and h.send(31, after=2 * MINUTE) == []
    assert h.wait(2 * MINUTE + timedelta(seconds=59)) == []  # 4m59s: not yet
    [started] = h.wait(timedelta(seconds=1))
    instance = h.store.load(started)
    assert instance.variables == {"temp": 31} and instance.correlation_key == "fz-1"
    assert instance.started_at == T0 + 5 * MINUTE
    assert h.store.load_trigger_states([("hot", "fz-1")]) == {}  # the hold is gone with the start
    assert h.kinds() == [("opened", "for"), ("held", "for"), ("completed", "for")]


def test_a_cool_reading_drops_the_hold_and_nothing_starts() -> None:
    h = Harness(hot("for: 5m"))
    h.send(30)
    h.send(20, after=3 * MINUTE)
    assert h.wait(timedelta(hours=1)) == [] and h.instances() == []
    assert h.kinds() == [("opened", "for"), ("dropped", "condition")]


def test_a_dropped_hold_reopens_and_counts_from_the_new_first_reading() -> None:
    h = Harness(hot("for: 5m"))
    h.send(30)
    h.send(20, after=4 * MINUTE)
    h.send(32, after=MINUTE)  # re-opens at 5m
    assert h.wait(4 * MINUTE) == []  # 9m: only 4 minutes into the new hold
    [started] = h.wait(MINUTE)
    assert h.store.load(started).started_at == T0 + 10 * MINUTE


def test_a_matching_reading_at_the_due_time_starts_at_once() -> None:
    h = Harness(hot("for: 5m"))
    h.send(30)
    h.clock.now += 5 * MINUTE  # no sweep ran
    [started] = h.send(33)
    assert h.store.load(started).variables == {"temp": 33}
    assert h.wait(timedelta(hours=1)) == []  # the hold was used up by that start


def test_a_cool_reading_after_a_late_sweep_still_starts_the_complete_hold_and_refreshes_it() -> None:
    h = Harness(hot("for: 5m"))
    h.send(30)
    h.clock.now += 6 * MINUTE  # the hold was complete at 5m; the sweep is late
    [started] = h.send(2)
    instance = h.store.load(started)
    assert instance.status == "completed" and instance.variables == {"temp": 2}  # the cool reading ended its wait


def test_keys_hold_independently_and_an_active_instance_is_refreshed_as_before() -> None:
    h = Harness(hot("for: 5m"))
    h.send(30, "fz-1")
    h.send(30, "fz-2", after=2 * MINUTE)
    [first] = h.wait(3 * MINUTE)
    assert h.store.load(first).correlation_key == "fz-1"
    h.send(40, "fz-1")  # the key has an active instance: refreshes it, opens no hold
    assert h.store.load(first).variables == {"temp": 40}
    [second] = h.wait(2 * MINUTE)
    assert h.store.load(second).correlation_key == "fz-2"
    assert h.store.load_trigger_states([("hot", "fz-1"), ("hot", "fz-2")]) == {}


def test_a_claimed_hold_completed_by_a_message_meanwhile_starts_no_second_instance() -> None:
    h = Harness(hot("for: 5m"))
    h.send(30)
    h.clock.now += 5 * MINUTE
    claimed = h.store.claim_due_holds(h.clock.now, 10, 30)
    assert len(claimed) == 1
    [started] = h.send(31)  # wins the race: starts at once
    assert h.dispatcher.fire_holds(claimed) == []
    assert [i.id for i in h.instances()] == [started]


def test_holds_of_pipelined_batches_build_on_each_other() -> None:
    h = Harness(hot("for: 5m"))
    value = lambda temp: json.dumps({"tags": {"id": "fz-1"}, "fields": {"temp": temp}}).encode()  # noqa: E731
    first = h.dispatcher.prepare_batch([IncomingMessage(MessageCoordinate("temps", 0, 1), value(30))])
    second = h.dispatcher.prepare_batch([IncomingMessage(MessageCoordinate("temps", 0, 2), value(31))], after=first)
    h.dispatcher.commit_prepared(first)
    h.dispatcher.commit_prepared(second)  # would conflict had it read the hold from the store
    [state] = h.store.load_trigger_states([("hot", "fz-1")]).values()
    assert state.variables == {"temp": 31} and state.held_since == T0 and state.version == 2


# --- count within ----------------------------------------------------------------


def test_the_third_reading_within_ten_minutes_starts_and_the_count_resets() -> None:
    h = Harness(hot("count: 3, within: 10m, mode: parallel"))
    assert h.send(30) == [] and h.send(30, after=4 * MINUTE) == []
    [started] = h.send(31, after=4 * MINUTE)
    assert h.store.load(started).variables == {"temp": 31}
    assert h.store.load_trigger_states([("hot", "fz-1")]) == {}  # reset: nothing left to keep


def test_the_count_window_slides() -> None:
    h = Harness(hot("count: 3, within: 10m"))
    h.send(30)  # 0m
    h.send(30, after=6 * MINUTE)  # 6m
    assert h.send(30, after=6 * MINUTE) == []  # 12m: the 0m reading is out of the window
    [state] = h.store.load_trigger_states([("hot", "fz-1")]).values()
    assert state.counts == (T0 + 6 * MINUTE, T0 + 12 * MINUTE)  # at most count - 1 kept
    assert len(h.send(30, after=2 * MINUTE)) == 1  # 14m: 6, 12, 14


def test_readings_below_the_condition_do_not_count_and_do_not_reset() -> None:
    h = Harness(hot("count: 2, within: 10m"))
    h.send(30)
    h.send(10, after=MINUTE)
    assert len(h.send(30, after=MINUTE)) == 1


def test_a_redelivered_counted_reading_is_not_counted_twice() -> None:
    h = Harness(hot("count: 2, within: 10m"))
    h.send(30, offset=100)
    assert h.send(30, offset=100) == []  # the same message again: a duplicate
    [state] = h.store.load_trigger_states([("hot", "fz-1")]).values()
    assert len(state.counts) == 1


# --- cooldown --------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["completed", "failed", "cancelled"])
def test_after_an_instance_ends_matching_readings_start_nothing_for_the_cooldown(ending: str) -> None:
    h = Harness(hot("cooldown: 30m"))
    [first] = h.send(30)
    h.clock.now += 10 * MINUTE
    if ending == "completed":
        h.send(2)  # the wait's condition holds: the instance ends
    elif ending == "failed":
        h.dispatcher.control(first, Fail("pump fault"))
    else:
        h.dispatcher.control(first, Cancel("by hand"))
    assert h.store.load(first).status == ending
    assert h.send(35, after=29 * MINUTE) == []  # 29 minutes after the end: still cooling down
    assert ("suppressed", "cooldown") in h.kinds()
    assert len(h.send(36, after=MINUTE)) == 1  # 30 minutes: through again


def test_cooldown_is_per_key_and_an_instance_ending_in_the_same_batch_counts() -> None:
    h = Harness(hot("cooldown: 30m"))
    coordinate = itertools.count(500)
    batch = [
        IncomingMessage(MessageCoordinate("temps", 0, next(coordinate)), json.dumps({"tags": {"id": key}, "fields": {"temp": temp}}).encode())
        for key, temp in (("fz-1", 30), ("fz-1", 2), ("fz-1", 40), ("fz-2", 40))
    ]
    started = h.dispatcher.handle_batch(batch).started
    assert [h.store.load(i).correlation_key for i in started] == ["fz-1", "fz-2"]  # fz-1's 40 fell in its cooldown


def test_for_and_cooldown_together() -> None:
    h = Harness(hot("for: 5m, cooldown: 30m"))
    h.send(30)
    [first] = h.wait(5 * MINUTE)
    h.send(2)  # ends it at 5m
    h.send(30, after=MINUTE)  # in the cooldown: opens no hold
    assert h.wait(timedelta(minutes=20)) == []
    h.send(30, after=10 * MINUTE)  # 36m: cooldown over, a hold opens
    [second] = h.wait(5 * MINUTE)
    assert second != first and h.store.load(second).started_at == T0 + 41 * MINUTE


# --- reloads ---------------------------------------------------------------------


def test_a_changed_trigger_drops_pending_holds_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(hot("for: 5m"), hot("for: 5m", "other"))
    h.send(30)
    with caplog.at_level(logging.INFO):
        h.registry.activate([hot("for: 10m"), hot("for: 5m", "other")])
    changed = [r.getMessage() for r in caplog.records if "trigger of" in r.getMessage()]
    assert changed == ["trigger of hot changed (v1 -> v2): its pending holds and counts are dropped"]
    assert h.wait(5 * MINUTE) == []  # the old hold does not complete
    assert ("dropped", "trigger_changed") in h.kinds()
    assert h.instances() == []


def test_reloading_other_definitions_leaves_holds_alone() -> None:
    h = Harness(hot("for: 5m"), hot("for: 5m", "other"))
    h.send(30)
    h.registry.activate([hot("for: 5m"), hot("for: 1m", "other")])
    [started] = h.wait(5 * MINUTE)
    assert h.store.load(started).definition_id == "hot"


def test_a_message_meeting_a_hold_of_the_old_trigger_opens_a_new_one() -> None:
    h = Harness(hot("for: 5m"))
    h.send(30)
    h.registry.activate([hot("for: 10m")])
    h.send(31, after=MINUTE)
    [state] = h.store.load_trigger_states([("hot", "fz-1")]).values()
    assert state.held_since == T0 + MINUTE and state.due_at == T0 + 11 * MINUTE
    assert h.kinds()[-2:] == [("dropped", "trigger_changed"), ("opened", "for")]


# --- validation ------------------------------------------------------------------


def held(*rules: str, kind: str = "kafka") -> str:
    """GOOD with these lines added under `trigger`."""
    head = "id: x\ntrigger:\n  type: " + kind + "\n  topic: t\n" + ("  cron: '* * * * *'\n" if kind == "schedule" else "")
    return head + "".join(f"  {rule}\n" for rule in rules) + "activities:\n  - {id: start, type: start}\n  - {id: done, type: end}\n"


def test_rules_parse_into_the_trigger() -> None:
    trigger = definition_from(held("for: 4m30s", "cooldown: PT30M")).trigger
    assert (trigger.hold_for, trigger.cooldown, trigger.count) == (timedelta(minutes=4, seconds=30), timedelta(minutes=30), None)
    counted = definition_from(held("count: 3", "within: 10m")).trigger
    assert (counted.count, counted.within, counted.holds) == (3, timedelta(minutes=10), True)
    assert definition_from(held()).trigger.holds is False and counted.config_hash != trigger.config_hash


@pytest.mark.parametrize(
    ("rules", "line", "reason"),
    [
        (("forr: 4s",), 5, "unknown trigger key 'forr' (did you mean 'for'?)"),
        (("cooldwn: 4s",), 5, "unknown trigger key 'cooldwn' (did you mean 'cooldown'?)"),
        (("colour: red",), 5, "unknown trigger key 'colour' (expected one of"),
        (("count: 3",), 5, "'count' needs 'within' (e.g. count: 3 with within: 10m)"),
        (("within: 10m",), 5, "'within' needs 'count'"),
        (("for: 5m", "count: 3", "within: 10m"), 6, "'for' and 'count' cannot be combined"),
        (("for: soon",), 5, "bad duration 'soon'"),
        (("for: 0s",), 5, "'for' must be longer than zero"),
        (("count: 0", "within: 1m"), 5, "'count' must be a whole number from 1 to 1000, got 0"),
        (("cooldown: -5m",), 5, "bad duration '-5m'"),
    ],
)
def test_rule_mistakes_name_the_line_and_the_fix(rules: tuple[str, ...], line: int, reason: str) -> None:
    problems = errors_of(held(*rules))
    assert any(found_line == line and found.startswith(reason) for found_line, found in problems), problems


def test_rules_need_a_topic_trigger() -> None:
    [(line, reason)] = errors_of(held("for: 5m", kind="schedule"))
    assert line == 6 and reason == "'for' needs a kafka/redpanda trigger: it holds messages per key"
