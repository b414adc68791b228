"""Correlation without `correlate`: the Kafka key, else the topic; and the warning that says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.app import definition_extensions
from process_engine.cli import main
from process_engine.domain.correlation_advice import correlation_warnings
from process_engine.engine.triggers import TOPIC_KEY, correlation_key
from process_engine.flowtest.simulator import run_case
from process_engine.flowtest.spec import EXPECT_KEYS, MESSAGE_KEYS, STUB_KEYS, TEST_KEYS, parse_test_text
from process_engine.ports import IncomingMessage, InstanceQuery, MessageCoordinate
from tests.unit.test_dispatcher import Clock, make

ROOT = Path(__file__).resolve().parents[2]
FREEZER = """
id: freezer-watch
trigger: {type: kafka, topic: freezers, condition: "fields.temp_c > -10"}
variables:
  - {name: device_id, source: tags.device_id}
  - {name: temperature, source: fields.temp_c}
activities:
  - {id: start, type: start}
  - {id: hold, type: timer, duration: 2m}
  - {id: done, type: end}
"""


@pytest.fixture
def clock() -> Clock:
    return Clock()


def freezer(text: str = FREEZER):
    return load_text(text, "freezer-watch.yaml", definition_extensions())


def reading(device: str, temp: float, key: bytes | None, offset: int) -> IncomingMessage:
    value = json.dumps({"tags": {"device_id": device}, "fields": {"temp_c": temp}}).encode()
    return IncomingMessage(MessageCoordinate("freezers", 0, offset), value, key)


def test_the_kafka_key_is_the_correlation_key_without_correlate() -> None:
    definition = freezer()
    assert correlation_key(definition, {}, b"fz-1") == "fz-1"
    assert correlation_key(definition, {}, b"\xff\x00") == "0xff00"  # not text: spelled in hex
    assert correlation_key(definition, {}, b"") == TOPIC_KEY
    assert correlation_key(definition, {}, None) == TOPIC_KEY
    correlated = freezer(FREEZER.replace('condition: "fields.temp_c > -10"', 'condition: "fields.temp_c > -10", correlate: tags.device_id'))
    assert correlation_key(correlated, {"tags": {"device_id": "fz-9"}}, b"other") == "fz-9"  # correlate wins


def test_keyed_readings_of_three_freezers_never_refresh_each_other(clock) -> None:
    store, dispatcher, _ = make([freezer()], clock)
    batch = [reading("fz-1", -4.0, b"fz-1", 0), reading("fz-2", -5.0, b"fz-2", 1), reading("fz-3", -3.0, b"fz-3", 2)]
    assert len(dispatcher.handle_batch(batch).started) == 3
    assert dispatcher.handle_batch([reading("fz-2", -18.0, b"fz-2", 3)]).refreshed == 1
    found = {i.correlation_key: i.variables for i in store.find_instances(InstanceQuery(limit=10))}
    assert found == {
        "fz-1": {"device_id": "fz-1", "temperature": -4.0},
        "fz-2": {"device_id": "fz-2", "temperature": -18.0},
        "fz-3": {"device_id": "fz-3", "temperature": -3.0},
    }


def test_unkeyed_readings_share_the_topic_key(clock) -> None:
    store, dispatcher, _ = make([freezer()], clock)
    dispatcher.handle_batch([reading("fz-1", -4.0, None, 10), reading("fz-2", -5.0, None, 11)])
    [shared] = store.find_instances(InstanceQuery(limit=10))
    assert (shared.correlation_key, shared.variables["device_id"]) == (TOPIC_KEY, "fz-2")


def test_a_waiting_definition_without_correlate_is_warned_about_with_a_path() -> None:
    [warning] = correlation_warnings(freezer())
    assert warning == (
        "definition 'freezer-watch' waits and reads variables from topic 'freezers' but has no 'correlate': "
        "messages with no Kafka key all refresh one instance, whichever device sent them; "
        "set e.g. 'correlate: tags.device_id'"
    )
    renamed = freezer(FREEZER.replace("name: device_id, source: tags.device_id", "name: pump_id, source: $.meta.pump"))
    assert correlation_warnings(renamed)[0].endswith("set e.g. 'correlate: meta.pump'")
    assert correlation_warnings(freezer(FREEZER.replace("  - {id: hold, type: timer, duration: 2m}\n", ""))) == []
    keyed = FREEZER.replace('condition: "fields.temp_c > -10"', 'condition: "fields.temp_c > -10", correlate: tags.device_id')
    assert correlation_warnings(freezer(keyed)) == []


def test_validate_prints_the_warning_and_still_exits_0(tmp_path: Path, capsys) -> None:
    (tmp_path / "freezer-watch.yaml").write_text(FREEZER)
    assert main(["validate", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"ok  {tmp_path}/freezer-watch.yaml  (freezer-watch)"
    assert lines[1].startswith(f"{tmp_path}/freezer-watch.yaml: warning: definition 'freezer-watch' waits")
    assert lines[2] == "1 file(s) checked, 0 error(s), 1 warning(s)"


def test_a_flow_test_message_may_carry_a_key() -> None:
    spec = parse_test_text(
        """
definition: freezer-watch
tests:
  - name: two keyed freezers
    messages:
      - {key: fz-1, value: {tags: {device_id: fz-1}, fields: {temp_c: -4.0}}}
      - {key: fz-2, value: {tags: {device_id: fz-2}, fields: {temp_c: -5.0}}}
    expect: {instances: 2}
""",
        "freezer-watch.test.yaml",
    )
    outcome = run_case(spec.tests[0], freezer())
    assert [i.variables["device_id"] for i in outcome.instances] == ["fz-1", "fz-2"]


def test_the_readme_shows_every_key_of_a_flow_test_file() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Every key a flow test file may hold"):]
    example = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    spec = parse_test_text(example, "README.md")
    assert spec.definition_id == "temperature-control" and spec.tests
    keys = set(re.findall(r"(\w+):", example))
    assert (MESSAGE_KEYS | TEST_KEYS | STUB_KEYS | set(EXPECT_KEYS) | {"definition", "tests"}) - keys == set()


WAITING = FREEZER.replace('condition: "fields.temp_c > -10"', 'condition: "fields.temp_c > -10", correlate: tags.device_id')


def variable_rows(store) -> int:
    [instance] = store.find_instances(InstanceQuery(limit=10))
    return sum(1 for h in store.history(instance.id) if h.event_type == "variable_changed")


def test_refreshes_at_one_a_second_write_one_row_a_minute_per_variable(clock) -> None:
    from datetime import timedelta

    from process_engine.runtime.dispatcher import Dispatcher

    store, plain, _ = make([freezer(WAITING)], clock)
    dispatcher = Dispatcher(store, plain.registry, clock=clock, new_id=plain.new_id, refresh_interval=60.0)
    dispatcher.handle_batch([reading("fz-1", -4.0, None, 100)])
    for second in range(1, 120):  # two minutes of readings, each a new temperature
        clock.now += timedelta(seconds=1)
        dispatcher.handle_batch([reading("fz-1", -4.0 + second / 100, None, 100 + second)])
    [instance] = store.find_instances(InstanceQuery(limit=10))
    assert instance.variables["temperature"] == -4.0 + 119 / 100  # the row has the latest value
    assert variable_rows(store) == 2  # the first change in each of the two minutes


def test_an_interval_of_zero_records_every_change(clock) -> None:
    from datetime import timedelta

    store, dispatcher, _ = make([freezer(WAITING)], clock)  # the dispatcher's default: 0
    dispatcher.handle_batch([reading("fz-1", -4.0, None, 300)])
    for second in range(1, 11):
        clock.now += timedelta(seconds=1)
        dispatcher.handle_batch([reading("fz-1", -4.0 + second / 100, None, 300 + second)])
    assert variable_rows(store) == 10
