"""Input that raises where nothing expected it: one message, timer or outcome fails alone.

On the in-memory store, so every path (a batch, a prepared batch, a timer) is cheap
to drive; tests/integration/test_hostile_messages.py replays the attacks on the real servers.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.app import definition_extensions
from process_engine.domain.errors import ExpressionError, StoreError
from process_engine.domain.templates import compile_template
from process_engine.ports import IncomingMessage, InstanceQuery, MessageCoordinate
from process_engine.runtime.commit_plan import to_json_text
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.message_decoding import MessageLimits, Refused, decode_message, nested_deeper
from process_engine.runtime.registry import DefinitionRegistry
from tests.unit.test_dispatcher import Clock

SLOPPY = """
id: sloppy
trigger: {type: kafka, topic: plant, condition: "fields.go", correlate: tags.device_id}
variables:
  - {name: mode, source: fields.mode}
activities:
  - {id: start, type: start}
  - {id: pause, type: timer, duration: 1m}
  - {id: tidy, type: tidy_up}
  - {id: done, type: end}
"""


class TidyUp:
    """A plug-in with a bug: for mode 'bad' it returns a list where a mapping belongs."""

    def execute(self, options, variables):
        return [1, 2] if variables.get("mode") == "bad" else {"tidied": True}


@pytest.fixture
def plant(clock: Clock):
    extensions = definition_extensions()
    extensions.activity_types = {"tidy_up": TidyUp()}
    text = SLOPPY if clock.timer else SLOPPY.replace("  - {id: pause, type: timer, duration: 1m}\n", "")
    definition = load_text(text, "sloppy.yaml", extensions)
    store = MemoryInstanceStore(clock=clock)
    registry = DefinitionRegistry(store, extensions)
    registry.activate([definition])
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
    return store, Dispatcher(store, registry, clock=clock, new_id=lambda: next(ids))


@pytest.fixture
def clock(request) -> Clock:
    clock = Clock()
    clock.timer = getattr(request, "param", False)
    return clock


offsets = itertools.count()


def reading(device: str, mode: str = "ok", go: bool = True) -> IncomingMessage:
    value = json.dumps({"tags": {"device_id": device}, "fields": {"go": go, "mode": mode}}).encode()
    return IncomingMessage(MessageCoordinate("plant", 0, next(offsets)), value)


def test_a_message_whose_handling_raises_is_dead_lettered_and_the_batch_goes_on(plant) -> None:
    store, dispatcher = plant
    batch = [reading("d-1"), reading("d-2", "bad"), reading("d-3")]
    result = dispatcher.handle_batch(batch)
    assert result.dead_lettered == 1 and len(result.started) == 2
    [letter] = store.dead_letters(10)
    assert letter.coordinate == batch[1].coordinate
    assert letter.reason.startswith("handling for sloppy: TypeError: ")
    keys = sorted(i.correlation_key for i in store.find_instances(InstanceQuery(limit=10)))
    assert keys == ["d-1", "d-3"]  # each once: the half-done work of the first round was thrown away


def test_a_prepared_batch_leaves_the_raising_message_out_too(plant) -> None:
    store, dispatcher = plant
    first = dispatcher.prepare_batch([reading("d-1")])
    second = dispatcher.prepare_batch([reading("d-2", "bad"), reading("d-4")], after=first)
    dispatcher.commit_prepared(first)
    result = dispatcher.commit_prepared(second)
    assert (result.dead_lettered, len(result.started)) == (1, 1)
    keys = sorted(i.correlation_key for i in store.find_instances(InstanceQuery(limit=10)))
    assert keys == ["d-1", "d-4"]


@pytest.mark.parametrize("clock", [True], indirect=True)
def test_a_timer_whose_step_raises_fails_its_instance_with_the_reason(plant, clock: Clock) -> None:
    store, dispatcher = plant
    dispatcher.handle_batch([reading("d-bad", "bad"), reading("d-ok")])
    clock.now += timedelta(minutes=2)
    steps = dispatcher.fire_timers(store.claim_due_timers(clock.now, 10, 30))
    assert len(steps) == 2
    found = {i.correlation_key: i for i in store.find_instances(InstanceQuery(limit=10))}
    assert found["d-ok"].status == "completed"
    bad = found["d-bad"]
    assert bad.status == "failed"
    assert bad.error.startswith("TimerFired could not be applied: TypeError: ")
    assert [h.event_type for h in store.history(bad.id)][-1] == "failed"


def test_decoding_refuses_size_and_depth_before_anything_reads_the_message() -> None:
    limits = MessageLimits(max_bytes=100, max_depth=3)
    assert decode_message(b'{"a": {"b": {"c": 1}}}', limits) == {"a": {"b": {"c": 1}}}
    assert decode_message(b'{"a": {"b": {"c": []}}}', limits) == Refused("nested deeper than 3 levels")
    assert decode_message(b'{"s": "[[[[{{{{"}', limits) == {"s": "[[[[{{{{"}  # brackets in text are no nesting
    assert decode_message(b'[[[[]]]]', limits) == Refused("wrong shape: expected a JSON object, got list")
    assert decode_message(b'{"":[[[]]]}', limits) == Refused("nested deeper than 3 levels")  # as short as that depth can be
    assert decode_message(b'{"s": "' + b"x" * 100 + b'"}', limits) == Refused("too large: 109 bytes, over MAX_MESSAGE_BYTES (100)")
    assert decode_message(None, limits) == Refused("empty message (no value)")


def test_nesting_is_measured_without_recursion_at_any_depth() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert nested_deeper(deep, 64)
    assert not nested_deeper({"a": [{"b": 1}], "c": {}}, 3)
    assert nested_deeper({"a": [{"b": []}]}, 3)


def test_values_nested_too_deep_for_json_are_errors_not_crashes() -> None:
    deep: list = []
    for _ in range(5_000):
        deep = [deep]
    with pytest.raises(StoreError, match="is not JSON-serialisable"):
        to_json_text(deep, "variables of x")
    with pytest.raises(ExpressionError, match="cannot interpolate a list as text"):
        compile_template("reading: ${v}").render({"v": deep})
    with pytest.raises(ExpressionError, match="cannot interpolate a int as text"):
        compile_template("n = ${v}").render({"v": 10**5000})
