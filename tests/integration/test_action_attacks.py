"""The action attacks of issue 13, replayed against a running engine and the real servers.

Read-back SSRF through the API, a path rewritten by a `${}` value, a header read back
from history, and a telemetry value rewriting an MQTT topic: each is refused with its
reason, and the engine goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from process_engine.app import Engine
from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.http import http_server as serve_http
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import engine_settings, running_engine, unique
from tests.integration.test_action_targets import Target
from tests.integration.test_http_api import HOLD, control_plane, poll, start

pytestmark = pytest.mark.integration
SECRET_PAGE = "admin page"  # what the admin endpoint of the target server answers
# The issue's definition: a constant URL an API caller tried to replace.
STATUS_CHECK = """
id: status-check
trigger: {type: api}
variables:
  - {name: status_url, value: "http://printer.lan/status"}
  - {name: device, source: device}
activities:
  - {id: start, type: start}
  - {id: fetch, type: service, action: http, config: {method: GET, url: "${status_url}", timeout: 2}, retry: {max_attempts: 1}}
  - {id: end, type: end}
"""
# A definition that takes its URL from the caller: the destination check is what stops it.
LOOKUP = """
id: lookup
trigger: {type: api}
variables:
  - {name: target, source: target}
activities:
  - {id: start, type: start}
  - {id: fetch, type: service, action: http, config: {method: GET, url: "${target}", timeout: 2}, retry: {max_attempts: 3}}
  - {id: end, type: end}
"""
DEVICE_STATUS = """
id: device-status
trigger: {type: api}
variables:
  - {name: device, source: device}
activities:
  - {id: start, type: start}
  - id: fetch
    type: service
    action: http
    config:
      method: GET
      url: "http://127.0.0.1:PORT/devices/${device}/status"
      headers: {Authorization: "Bearer static-secret-123", X-Device: "${device}"}
  - {id: big, type: service, action: http, config: {method: GET, url: "http://127.0.0.1:PORT/big"}}
  - {id: end, type: end}
"""


@pytest.fixture
def target_server():
    with serve_http(Target) as server:
        yield server


def engine_with(folder: Path, database_url: str, kafka_bootstrap: str, mqtt_url: str, definitions: dict[str, str], **extra: str):
    for name, text in definitions.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return running_engine(engine_settings(database_url, kafka_bootstrap, mqtt_url, folder, unique("g"), **extra))


@pytest.fixture
def default_engine(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> Iterator[Engine]:
    """HTTP_ACTION_ALLOW not set: the default policy, as a fresh install has it."""
    with engine_with(tmp_path, database_url, kafka_bootstrap, mqtt_url, {"status-check": STATUS_CHECK, "lookup": LOOKUP, "hold": HOLD}) as engine:
        yield engine


def failed(client: httpx.Client, instance_id: str) -> dict[str, Any]:
    return poll(client, f"/instances/{instance_id}", lambda body: body["status"] == "failed", f"instance {instance_id} to fail")


def test_the_read_back_ssrf_of_the_issue_is_refused(default_engine: Engine, target_server) -> None:
    admin = f"http://127.0.0.1:{target_server.server_address[1]}/admin"
    with control_plane(default_engine) as client:
        # 1. Replacing the definition's constant URL: refused before anything starts.
        replaced = client.post("/definitions/status-check/instances", json={"variables": {"status_url": admin}})
        assert replaced.status_code == 400 and "'status_url'" in replaced.json()["error"]
        assert client.get("/instances", params={"definition": "status-check"}).json()["instances"] == []
        # 2. A URL the definition takes from the caller: the destination check refuses loopback, without retries.
        lookup = start(client, "lookup", {"target": admin})
        detail = failed(client, lookup["id"])
        assert "loopback" in detail["error"] and "HTTP_ACTION_ALLOW" in detail["error"]
        assert SECRET_PAGE not in client.get(f"/instances/{lookup['id']}").text
        assert [h["event_type"] for h in detail["history"]].count("action_failed") == 1
        # 3. The engine's own API, which would answer with every instance's history.
        own = failed(client, start(client, "lookup", {"target": f"{client.base_url}/instances"})["id"])
        assert "engine's own HTTP address" in own["error"]
        assert target_server.requests == []
        assert start(client, "hold", {"device": "d-1"})["status"] == "running"  # the engine goes on


def test_a_value_cannot_rewrite_the_path_and_headers_stay_out_of_history(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path, target_server) -> None:
    port = target_server.server_address[1]
    definitions = {"device-status": DEVICE_STATUS.replace("PORT", str(port))}
    with engine_with(tmp_path, database_url, kafka_bootstrap, mqtt_url, definitions, HTTP_ACTION_ALLOW="127.0.0.1") as engine, control_plane(engine) as client:
        instance = start(client, "device-status", {"device": "x/../../admin"})
        detail = poll(client, f"/instances/{instance['id']}", lambda body: body["status"] == "completed", "device-status to complete")
        text = client.get(f"/instances/{instance['id']}").text
    assert [r["path"] for r in target_server.requests] == ["/devices/x%2F..%2F..%2Fadmin/status", "/big"]
    assert "static-secret-123" not in text
    requested = [h["data"]["config"] for h in detail["history"] if h["event_type"] == "action_requested"]
    assert requested[0]["headers"] == {"Authorization": "***", "X-Device": "***"}
    assert requested[0]["url"] == f"http://127.0.0.1:{port}/devices/x%2F..%2F..%2Fadmin/status"
    [big] = [h["data"]["result"] for h in detail["history"] if h["activity_id"] == "big" and h["event_type"] == "completed"]
    assert big["truncated"] is True and len(big["body"].encode()) == 1024


def test_a_telemetry_value_cannot_rewrite_an_mqtt_topic(database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path) -> None:
    run, topic = unique("rooms"), create_topic(kafka_bootstrap, unique("room-telemetry"))
    definition = f"""
id: room-command
trigger: {{type: kafka, topic: {topic}, correlate: room}}
variables:
  - {{name: room, source: room}}
activities:
  - {{id: start, type: start}}
  - id: command
    type: service
    action: mqtt_publish
    config: {{topic: "{run}/${{room}}/set", payload: on}}
    retry: {{max_attempts: 3, backoff: 1s}}
    on_error: note
  - {{id: done, type: end}}
  - {{id: note, type: service, action: log, config: {{message: "refused ${{room}}"}}, next: done}}
"""
    recorder = mqtt_recorder(f"{run}/#")
    with engine_with(tmp_path, database_url, kafka_bootstrap, mqtt_url, {"room-command": definition}) as engine:
        produce_json(kafka_bootstrap, topic, [{"room": "kitchen/../../#"}, {"room": "kitchen"}])
        instances = wait_until(lambda: finished_all(engine, 2), 30, "both instances to finish")
        assert engine.alive() == (True, "ok")
        by_room = {i.variables["room"]: i for i in instances}
        history = engine.store.history(by_room["kitchen/../../#"].id)
    assert {i.status for i in instances} == {"completed"}
    failures = [h.message for h in history if h.event_type == "action_failed"]
    assert len(failures) == 1 and "holds '/' and '#'" in failures[0]  # not retriable: no second attempt
    assert any(h.event_type == "error_path" for h in history)
    recorder.wait_for(1)
    assert [m.topic for m in recorder.messages] == [f"{run}/kitchen/set"]  # the refused one never went out


def finished_all(engine: Engine, count: int) -> list:
    found = engine.store.find_instances(InstanceQuery(definition_id="room-command", limit=10))
    done = [i for i in found if i.status != "running"]
    return done if len(done) == count else []
