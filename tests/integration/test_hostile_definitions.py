"""Hostile definitions and expression bombs against a running engine on the real servers.

A bomb fails its own instance with the reason; a hostile file dropped into the folder
is that file's error; the engine goes on, and a good message or file after them works.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import committed_offsets, engine_settings, running_engine, unique

pytestmark = pytest.mark.integration

DOUBLING = """
id: doubling
trigger: {type: kafka, topic: TOPIC, correlate: tags.id}
variables:
  - {name: id, source: tags.id}
  - {name: items, source: fields.items}
activities:
  - {id: start, type: start}
  - {id: grow, type: set, set: {items: "${items} + ${items}"}}
  - {id: again, type: decision, condition: "len(${items}) < 64 or ${id} == 'bomb'", true_path: grow, false_path: done}
  - {id: done, type: end}
"""
ALIAS_BOMB = "\n".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{level}: &a{level} [{','.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 7)]
    + ["id: bomb", "trigger: {type: api}", "activities: [{id: start, type: start}, {id: done, type: end}]", ""]
)
LATE = """
id: late
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: done, type: end}
"""


def test_a_bomb_fails_its_instance_and_a_hostile_file_is_its_own_error(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    topic, group = unique("bombs"), unique("g")
    (tmp_path / "doubling.yaml").write_text(DOUBLING.replace("TOPIC", topic))
    create_topic(kafka_bootstrap, topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, group)
    with running_engine(settings) as engine:
        (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
        (tmp_path / "parser.yaml").write_text(LATE.replace("id: late", "id: parser").replace(
            "  - {id: done, type: end}", '  - {id: check, type: decision, condition: "' + "x" + "+x" * 4900 + '", true_path: done, false_path: done}\n  - {id: done, type: end}'))
        # A list of 30,000 doubles past 100,000 items in two rounds; one of 2 stops at 64.
        produce_json(kafka_bootstrap, topic, [
            {"tags": {"id": "bomb"}, "fields": {"items": [0] * 30_000}},
            {"tags": {"id": "fine"}, "fields": {"items": [1, 2]}},
        ])
        wait_until(lambda: committed_offsets(kafka_bootstrap, group, topic) == [2], 30, "both messages to be committed")
        found = wait_until(lambda: {i.correlation_key: i for i in engine.store.find_instances(InstanceQuery(limit=10))
                                    if i.status != "running"} or None, 30, "both instances to end")
        assert found["bomb"].status == "failed" and "100,000 items" in found["bomb"].error
        assert found["fine"].status == "completed" and len(found["fine"].variables["items"]) == 64
        errors = wait_until(lambda: {Path(e.file).name: e.reason for e in engine.folder.errors()} or None, 30, "the scan of the new files")
        assert errors["bomb.yaml"].startswith("YAML anchors (&a0) are not allowed")
        assert "longer than 4 KiB" in errors["parser.yaml"]
        (tmp_path / "late.yaml").write_text(LATE)  # a good file after the bad ones loads at once
        wait_until(lambda: engine.registry.current("late"), 30, "the good file to load")
        assert engine.registry.current("doubling") is not None and not engine.stop_event.is_set()
