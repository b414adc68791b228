"""The fused screening step answers as the general path does, or leaves the message to it.

`fast_screen` decodes, keys and screens a message in one step; whatever it answers
must be what decode_message, correlation_key and screen_all answer, and a message it
cannot vouch for (refused, raising, an odd key) must be left to the general path,
which dead-letters it with the reason. `quiet_scanner` calls a message quiet only
where `fast_screen` vouches for it with every outcome False. Then `ScreenedBatch.kept`
drops only messages that provably do nothing.
"""

from __future__ import annotations

import orjson
import pytest

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.adapters.memory.active_keys import MemoryActiveKeys
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.domain.expressions import compile_expression
from process_engine.engine.triggers import correlation_key
from process_engine.ports import IncomingBatch, IncomingMessage, MessageCoordinate
from process_engine.runtime.message_decoding import MessageLimits, Refused, decode_message
from process_engine.runtime.messages import MessageDispatcher
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.runtime.screening import ScreenedBatch, TopicScreen, fast_screen, quiet_scanner, screen_all
from tests.unit.hot_watch import WATCH, readings

BY_KEY = WATCH.replace("hot-watch", "by-kafka-key").replace(", correlate: tags.device_id", "")
WITH_VARIABLE = """
id: with-variable
trigger: {type: kafka, topic: readings, condition: "${temperature} > limit", correlate: tags.device_id}
variables:
  - {name: temperature, source: fields.temp_c}
activities:
  - {id: start, type: start}
  - {id: end, type: end}
"""
# Conditions of the `path <op> constant` shape that is followed in place, and ones just short of it.
CONDITIONS = ["fields.temp_c >= 25", "tags.device_id == 'hp-1'", "fields != 5", "fields.temp_c < 'x'", "limit <= 25.5",
              "pi > 3", "message.fields.temp_c > 1", "fields.temp_c > 25 and limit", "25 < fields.temp_c", "fields.temp_c > True"]
HOLDING = WATCH.replace("hot-watch", "holding").replace('condition: "fields.temp_c > 25"', 'condition: "fields.temp_c > 25", for: 5m')

LIMITS = MessageLimits(max_bytes=4096, max_depth=8)
VALUES: list[bytes | None] = [
    orjson.dumps({"tags": {"device_id": "hp-1"}, "fields": {"temp_c": 20.5}}),
    orjson.dumps({"tags": {"device_id": "hp-1"}, "fields": {"temp_c": 30}, "limit": 25}),
    orjson.dumps({"tags": {"device_id": 7}, "fields": {"temp_c": 20}}),  # a number as key: JSON text
    orjson.dumps({"tags": {"device_id": None}, "fields": {"temp_c": 20}}),
    orjson.dumps({"tags": {"device_id": {"a": [1, 2]}}, "fields": {"temp_c": 20}}),
    orjson.dumps({"tags": ["hp-1"], "fields": {"temp_c": 20}}),  # the path crosses a list
    orjson.dumps({"fields": {"temp_c": 20}}),  # no key at all
    orjson.dumps({"tags": {"device_id": "hp-2"}, "fields": {"temp_c": "hot"}}),  # the condition raises
    orjson.dumps({"tags": {"device_id": "hp-2"}, "fields": 5}),  # `fields.temp_c` of a number raises
    orjson.dumps({"tags": {"device_id": "hp-3"}}),  # the condition reads what is missing
    orjson.dumps({"tags": {"device_id": "hp-4"}, "fields": {"temp_c": 20}, "deep": [[[[[[[[[1]]]]]]]]]}),
    orjson.dumps({"tags": {"device_id": "hp-4"}, "fields": {"temp_c": 20}, "brackets": "{[{[{[{[{[{[" * 20}),
    orjson.dumps({"x": "y" * 5000}),  # over max_bytes
    b"[1, 2]", b"not json", b'{"a": NaN}', b"\xff\xfe", b"", None,
]


def general(definitions: list, value: bytes | None, key: bytes | None) -> object:
    """The general path's answer: Refused, ("key error", definition id), or the screened entries."""
    document = decode_message(value, LIMITS)
    if isinstance(document, Refused):
        return document
    pairs = []
    for definition in definitions:
        try:
            pairs.append((definition, correlation_key(definition, document, key)))
        except Exception:
            return ("key error", definition.id)
    return document, [(d.id, k, o if not isinstance(o, Exception) else type(o)) for d, k, o in screen_all(document, pairs)]


@pytest.mark.parametrize("texts", [[WATCH], [BY_KEY], [WITH_VARIABLE], [WATCH, BY_KEY, WITH_VARIABLE],
                                   *([WATCH.replace("fields.temp_c > 25", c)] for c in CONDITIONS)],
                         ids=["path", "kafka-key", "variable", "three", *CONDITIONS])
@pytest.mark.parametrize("key", [None, b"kafka-key", b"\xff\x00"], ids=["no-key", "key", "binary-key"])
def test_every_answer_is_the_general_paths_answer(texts: list[str], key: bytes | None) -> None:
    definitions = [load_text(text) for text in texts]
    fused = fast_screen(definitions, LIMITS)
    assert fused is not None
    vouched = 0
    for value in VALUES:
        answer = fused(value, key)
        expected = general(definitions, value, key)
        if answer is None:  # left to the general path, which is always right
            continue
        vouched += 1
        document, entries, quiet = answer
        assert (document, [(d.id, k, o) for d, k, o in entries]) == expected, value
        outcomes = [o for _, _, o in entries]
        assert all(isinstance(o, bool) for o in outcomes)
        if any(outcomes):
            assert quiet is None
        else:
            assert quiet == [(d.id, k) for d, k, _ in entries if k is not None]
    assert vouched >= (1 if WITH_VARIABLE in texts or WATCH not in texts else 5)  # the common shapes take the fused step


def test_a_message_it_leaves_to_the_general_path_is_refused_or_dead_lettered_there() -> None:
    definition = load_text(WATCH)
    fused = fast_screen([definition], LIMITS)
    assert fused is not None
    assert all(fused(value, None) is None for value in (b"not json", None, orjson.dumps({"x": "y" * 5000}), VALUES[7]))
    store = MemoryInstanceStore()
    registry = DefinitionRegistry(store)
    registry.activate([definition])
    dispatcher = MessageDispatcher(store, registry, limits=LIMITS)
    result = dispatcher.handle_batch([IncomingMessage(MessageCoordinate("readings", 0, n), value) for n, value in enumerate(VALUES)])

    def refused(value: bytes | None) -> bool:
        answer = general([definition], value, None)
        return isinstance(answer, Refused) or answer[0] == "key error" or any(isinstance(o, type) for _, _, o in answer[1])

    dead = {d.coordinate.offset for d in store.dead_letters()}
    assert dead == {n for n, value in enumerate(VALUES) if refused(value)} and result.dead_lettered == len(dead)
    assert {7, 8, 9, 14} <= dead  # text compared with a number, a field of a number, a missing field, not JSON


def test_definitions_with_windows_or_holds_take_the_general_path() -> None:
    assert fast_screen([load_text(HOLDING)], LIMITS) is None
    assert fast_screen([load_text(WATCH), load_text(HOLDING)], LIMITS) is None
    assert fast_screen([], LIMITS) is None


def kept_offsets(definition, batch: list[IncomingMessage], active: set, carried: set) -> tuple[list[int], set]:
    screens = {"readings": TopicScreen.of([definition], LIMITS)}
    incoming = IncomingBatch.of(batch)
    on_its_own = []

    def screen_one(index: int, screen: TopicScreen) -> tuple:
        on_its_own.append(index)
        return (incoming.message(index), *screen.fused(incoming.values[index], incoming.keys[index]))

    answers = []
    for keep_documents in (False, True):
        on_its_own.clear()
        screened = ScreenedBatch(incoming, range(len(batch)), screens, screen_one, keep_documents)
        kept, touched = screened.kept(active, carried)
        # Only the hot readings are screened on their own; the cold ones in the loop over the batch.
        assert on_its_own == [i for i, m in enumerate(batch) if orjson.loads(m.value)["fields"]["temp_c"] > 25]
        # A cold reading kept after all is what the fused step makes of it.
        fused = screens["readings"].fused
        assert [(m, document, entries, quiet) for m, document, entries, quiet in kept] == [(m, *fused(m.value, m.key)) for m, *_ in kept]
        answers.append(([m.coordinate.offset for m, *_ in kept], touched))
    assert answers[0] == answers[1]
    return answers[0]


def test_kept_are_what_an_active_carried_or_earlier_key_makes_matter() -> None:
    definition = load_text(WATCH)
    batch = readings(0, ("cold", 20.0), ("hot", 30.0), ("hot", 20.0), ("active", 20.0), ("carried", 20.0), ("cold", 21.0))
    offsets, touched = kept_offsets(definition, batch, active={("hot-watch", "active")}, carried={("hot-watch", "carried")})
    # The cold key does nothing; the hot reading may start an instance, which the reading after it refreshes.
    assert offsets == [1, 2, 3, 4]
    assert touched == {("hot-watch", "hot"), ("hot-watch", "active"), ("hot-watch", "carried")}
    assert kept_offsets(definition, [batch[0], batch[2], batch[5]], set(), set()) == ([], set())  # all quiet: nothing built
    # A quiet reading before the hot one is not kept: nothing was active when it came.
    assert kept_offsets(definition, [batch[2], batch[1], batch[2]], set(), set())[0] == [1, 2]


@pytest.mark.parametrize("texts", [[WATCH], [BY_KEY], [WITH_VARIABLE], [WATCH, BY_KEY, WITH_VARIABLE],
                                   *([WATCH.replace("fields.temp_c > 25", c)] for c in CONDITIONS)],
                         ids=["path", "kafka-key", "variable", "three", *CONDITIONS])
@pytest.mark.parametrize("key", [None, b"kafka-key", b"\xff\x00"], ids=["no-key", "key", "binary-key"])
def test_the_quiet_scan_calls_quiet_only_what_the_fused_step_vouches_for_as_doing_nothing(texts: list[str], key: bytes | None) -> None:
    definitions = [load_text(text) for text in texts]
    fused, scan = fast_screen(definitions, LIMITS), quiet_scanner(definitions, LIMITS)
    assert fused is not None and scan is not None
    values = VALUES + [orjson.dumps({"tags": {"device_id": f"hp-{n}"}, "fields": {"temp_c": n}, "limit": 3}) for n in range(40)]
    columns, loud = scan(values, [key] * len(values))
    assert len(columns) == len(definitions) and all(len(column) == len(values) for column in columns)
    assert loud == sorted(set(loud))
    for index, value in enumerate(values):
        answer = fused(value, key)
        quiet_there = answer is not None and answer[2] is not None
        if index in loud:
            assert all(column[index] is None for column in columns)  # its own entry names its keys
            continue  # screened again on its own, which is always right
        assert quiet_there, value  # never quiet where the fused step is not sure nothing happens
        _, entries, quiet = answer
        assert [column[index] for column in columns] == [k for _, k, _ in entries]
        assert quiet == [(d.id, k) for d, k, _ in entries if k is not None]
    # The commonest shapes take the loop: every cold reading of the plain ones is quiet there.
    if texts == [WATCH]:
        assert [i for i in range(len(VALUES), len(values)) if i not in loud] == [i for i in range(len(VALUES), len(values)) if values[i] and i - len(VALUES) <= 25]


def test_the_quiet_scan_takes_the_fused_steps_definitions_that_have_a_condition() -> None:
    for definitions in ([load_text(HOLDING)], [load_text(WATCH), load_text(HOLDING)], []):
        assert quiet_scanner(definitions, LIMITS) is None
    every = load_text(WATCH.replace("hot-watch", "every").replace('condition: "fields.temp_c > 25", ', ""))
    assert every.trigger.condition is None
    assert fast_screen([every], LIMITS) is not None and quiet_scanner([every], LIMITS) is None
    assert quiet_scanner([load_text(WATCH), every], LIMITS) is None  # every message matches it: none is quiet


def test_a_comparison_is_followed_in_place_only_in_its_plain_shape() -> None:
    shapes = {source: compile_expression(source).comparison() for source in CONDITIONS}
    assert shapes["fields.temp_c >= 25"] is not None and shapes["fields.temp_c >= 25"][0] == ("fields", "temp_c")
    assert shapes["limit <= 25.5"] is not None and shapes["fields != 5"] is not None
    for source in ("pi > 3", "message.fields.temp_c > 1", "fields.temp_c > 25 and limit", "25 < fields.temp_c", "fields.temp_c > True"):
        assert shapes[source] is None, source


def test_the_evaluator_answers_and_fails_as_evaluate_does() -> None:
    cases = [
        ("fields.temp_c > 25", {}, {"fields": {"temp_c": 30}}),
        ("${temperature} > limit", {"temperature": 20}, {"limit": 10}),
        ("round(message.fields.temp_c, 1) + pi", {}, {"fields": {"temp_c": 1.234}}),
        ("fields.temp_c > 25", {}, {"fields": {"temp_c": "hot"}}),
        ("fields.temp_c > 25", {}, {"other": 1}),
        ("${missing} > 1", {}, {"missing": 2}),
        ("text * count", {}, {"text": "x", "count": 10**9}),
    ]
    for source, variables, message in cases:
        expression = compile_expression(source)
        here = expression.evaluator()
        try:
            expected: object = expression.evaluate(variables, message)
        except Exception as error:
            expected = (type(error), str(error))
        try:
            got: object = here(variables, message)
        except Exception as error:
            got = (type(error), str(error))
        assert got == expected, source


def test_a_batch_builds_an_incoming_message_only_for_the_messages_that_matter() -> None:
    definition, other = load_text(WATCH), load_text(WATCH.replace("hot-watch", "other-watch").replace("topic: readings", "topic: others"))
    store = MemoryInstanceStore()
    registry = DefinitionRegistry(store)
    registry.activate([definition, other])
    dispatcher = MessageDispatcher(store, registry, limits=LIMITS, active_keys=MemoryActiveKeys(store))
    values = [("cold", 20.0)] * 300 + [("hot", 30.0), ("hot", 21.0), ("cold", 22.0)]
    messages = readings(0, *values)
    # A second topic in the same batch, between them: its own screen, its own key column.
    messages.insert(100, IncomingMessage(MessageCoordinate("others", 0, 0), orjson.dumps({"tags": {"device_id": "hot"}, "fields": {"temp_c": 20}})))
    messages.insert(200, IncomingMessage(MessageCoordinate("readings", 0, 999), b"not json"))
    built: list[int] = []

    def build(index: int) -> IncomingMessage:
        built.append(index)
        return messages[index]

    batch = IncomingBatch([m.coordinate.topic for m in messages], [m.value for m in messages], [m.key for m in messages], build)
    prepared = dispatcher.prepare_batch(batch, None, {})
    result = dispatcher.commit_prepared(prepared)
    assert len(result.started) == 1 and result.refreshed == 1 and result.dead_lettered == 1
    # The refused message, the hot one and the reading after it for the key it started; nothing else.
    assert sorted(set(built)) == [200, 302, 303]
    [instance] = store.active_by_keys([("hot-watch", "hot")])[("hot-watch", "hot")]
    assert instance.variables["temperature"] == 21.0
    # The next batch: the cold keys still cost nothing, the active one is refreshed.
    built.clear()
    later = readings(400, *([("cold", 20.0)] * 50 + [("hot", 23.0)]))
    messages[:] = later
    batch = IncomingBatch(["readings"] * len(later), [m.value for m in later], [m.key for m in later], build)
    assert dispatcher.commit_prepared(dispatcher.prepare_batch(batch, None, {})).refreshed == 1
    assert built == [50]
