"""The quiet scan written for a definition's paths answers as the fused step does, and keeps a definition's text as data."""

from __future__ import annotations

import operator

import orjson
import pytest

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.ports import IncomingMessage, InstanceQuery, MessageCoordinate
from process_engine.runtime.message_decoding import MessageLimits
from process_engine.runtime.messages import MessageDispatcher
from process_engine.runtime.quiet_scan import path_scan
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.runtime.screening import fast_screen, quiet_scanner
from tests.unit.test_fast_screen import VALUES

LIMITS = MessageLimits(max_bytes=4096, max_depth=8)
DEFINITION = """
id: paths
trigger: {{type: kafka, topic: readings, condition: "{condition}", correlate: {correlate}}}
activities:
  - {{id: start, type: start}}
  - {{id: end, type: end}}
"""
DOCUMENTS = [
    {"id": "a", "tags": {"device_id": "hp-1", "site": {"name": "north"}}, "fields": {"temp_c": 20, "inner": {"deep": {"x": 3}}}},
    {"id": "b", "tags": {"device_id": "hp-2", "site": {"name": 5}}, "fields": {"temp_c": 30.5, "inner": {"deep": {"x": 30}}}},
    {"id": 7, "tags": {"device_id": ["list"], "site": "flat"}, "fields": {"temp_c": "warm", "inner": {"deep": [1]}}},
    {"id": None, "tags": "flat", "fields": {"inner": {"deep": {}}}},
    {"tags": {"site": {"name": "south"}}, "fields": {"temp_c": None, "inner": 4}},
    {"id": "c", "tags": {"device_id": "hp-3", "site": {"name": "east"}}, "fields": {"temp_c": 25, "inner": {"deep": {"x": 25}}}},
]
CONDITIONS = [f"{path} {symbol} {constant}" for path in ("temp_c", "fields.temp_c", "fields.inner.deep.x")
              for symbol in (">", ">=", "<", "<=", "==", "!=") for constant in ("25", "25.0", "'hp'")]


@pytest.mark.parametrize("correlate", ["id", "tags.device_id", "tags.site.name"])
@pytest.mark.parametrize("condition", CONDITIONS)
def test_the_written_loop_is_quiet_exactly_where_the_fused_step_finds_nothing_to_do(correlate: str, condition: str) -> None:
    definitions = [load_text(DEFINITION.format(condition=condition, correlate=correlate))]
    fused, scan = fast_screen(definitions, LIMITS), quiet_scanner(definitions, LIMITS)
    assert fused is not None and scan is not None and scan.__code__.co_filename == "<quiet scan>"  # the written loop
    values = VALUES + [orjson.dumps(document) for document in DOCUMENTS]
    documents: list[dict | None] = [None] * len(values)
    (column,), loud = scan(values, [None] * len(values), documents)
    steps = correlate.split(".")
    for index, value in enumerate(values):
        answer = fused(value, None)
        nothing_to_do = answer is not None and answer[2] is not None
        if index in loud:
            assert column[index] is None and documents[index] is None
            # Loud where the fused step leaves it to the general path or it may do something,
            # and else only where its key is not text (the general path makes JSON text of it).
            assert not nothing_to_do or not isinstance(raw_key(orjson.loads(value), steps), (str, Absent)), value
            continue
        assert nothing_to_do, value  # quiet only where nothing can happen
        _, [(_, key, outcome)], _ = answer
        assert outcome is False and column[index] == key and documents[index] == orjson.loads(value)
    if condition == "fields.temp_c > 25":  # cold readings with a key: quiet
        assert len(values) - len(loud) >= 4


class Absent:
    """The key path reaches nothing."""


def raw_key(document: dict, steps: list[str]) -> object:
    """What the key path reaches (Absent when a step is absent; the document itself when the path leaves the objects)."""
    found: object = document
    for step in steps:
        if not isinstance(found, dict):
            return document
        if step not in found:
            return Absent()
        found = found[step]
    return found


def test_a_definitions_text_is_data_to_the_written_loop() -> None:
    hostile = ['"); import os; os.system("false"); ("', "\n    return\n", "{x}", "key with ' and \\"]
    scan = path_scan(tuple(hostile[:2]), tuple(hostile[2:]), operator.gt, float("inf"), 4096, 8)
    assert scan is not None
    document = {hostile[0]: {hostile[1]: "k-1"}, hostile[2]: {hostile[3]: 1e308}}
    other = {hostile[0]: {hostile[1]: "k-2"}, hostile[2]: {hostile[3]: 2}}
    (column,), loud = scan([orjson.dumps(document), orjson.dumps(other), b"{}"], [None, None, None])
    assert column == ["k-1", "k-2", None] and loud == [2]  # nothing is above infinity; `{}` reads nothing: loud


def test_an_operator_the_loop_cannot_write_is_left_to_the_general_scan() -> None:
    assert path_scan(("id",), ("x",), operator.is_, 1, 4096, 8) is None
    assert path_scan((), ("x",), operator.gt, 1, 4096, 8) is None


@pytest.mark.parametrize("steps", [16, 17, 60])
def test_a_long_key_path_is_scanned_and_its_hot_readings_start_instances(steps: int) -> None:
    keys = ["k"] * (steps - 1)
    definition = load_text(DEFINITION.format(condition="fields.temp_c > 25", correlate=".".join(["tags", *keys])))
    scan = quiet_scanner([definition], LIMITS)
    assert scan is not None and (scan.__code__.co_filename == "<quiet scan>") == (steps <= 16)  # longer: the general scan

    def tags(device: str) -> object:
        value: object = device
        for key in reversed(keys):
            value = {key: value}
        return value

    store = MemoryInstanceStore()
    registry = DefinitionRegistry(store)
    registry.activate([definition])
    dispatcher = MessageDispatcher(store, registry, limits=MessageLimits(max_bytes=65536, max_depth=80))
    messages = [IncomingMessage(MessageCoordinate("readings", 0, n), orjson.dumps({"tags": tags(f"hp-{n}"), "fields": {"temp_c": t}}))
                for n, t in enumerate([20, 30, 21, 40])]
    result = dispatcher.handle_batch(messages)
    assert (len(result.started), result.dead_lettered) == (2, 0)
    assert sorted(i.correlation_key for i in store.find_instances(InstanceQuery())) == ["hp-1", "hp-3"]
