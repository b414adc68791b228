"""The HTTP control plane against a real engine: probes, metrics, reads, starts, controls and the token."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from process_engine.adapters.http.api import create_app
from process_engine.adapters.http.server import HttpServer
from process_engine.app import Engine
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, free_port, produce_json
from tests.integration.engine_harness import copy_example, engine_settings, running_engine

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"

# Waits an hour on a timer: stays running, so it can be suspended, resumed and cancelled.
HOLD = """
id: hold
name: Hold for an hour
trigger: {type: api}
variables:
  - {name: device, source: device}
activities:
  - {id: start, type: start}
  - {id: wait_an_hour, type: timer, duration: 1h}
  - {id: end, type: end}
"""
# Fires a one-second timer, logs and ends: completes on its own.
QUICK = """
id: quick
name: Quick
trigger: {type: api}
variables:
  - {name: device, source: device}
activities:
  - {id: start, type: start}
  - {id: pause, type: timer, duration: 1s}
  - {id: say, type: service, action: log, config: {message: "done ${device}"}}
  - {id: end, type: end}
"""
# Calls a port nobody listens on, once, with no error path: fails.
FRAGILE = """
id: fragile
name: Fragile
trigger: {type: api}
activities:
  - {id: start, type: start}
  - id: call
    type: service
    action: http
    config: {method: GET, url: "http://127.0.0.1:PORT/nothing", timeout: 2}
    retry: {max_attempts: 1}
  - {id: end, type: end}
"""


@contextmanager
def control_plane(engine: Engine, token: str | None = TOKEN) -> Iterator[httpx.Client]:
    """The HTTP API of `engine` on an ephemeral port, and a client that sends the token and JSON."""
    server = HttpServer(create_app(engine, token), "127.0.0.1", 0).start()
    engine.serving_http("127.0.0.1", server.port)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["Content-Type"] = "application/json"
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            yield client
    finally:
        server.stop()


@pytest.fixture
def api_engine(database_url: str, kafka_bootstrap: str, mqtt_url: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine on the three API-triggered definitions (no topic to join)."""
    (tmp_path / "hold.yaml").write_text(HOLD, encoding="utf-8")
    (tmp_path / "quick.yaml").write_text(QUICK, encoding="utf-8")
    (tmp_path / "fragile.yaml").write_text(FRAGILE.replace("PORT", str(free_port())), encoding="utf-8")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, f"g-{uuid.uuid4().hex[:8]}", HTTP_ACTION_ALLOW="127.0.0.1")
    with running_engine(settings) as engine:
        yield engine


@pytest.fixture
def client(api_engine: Engine) -> Iterator[httpx.Client]:
    with control_plane(api_engine) as client:
        yield client


def poll(client: httpx.Client, path: str, check: Callable[[Any], bool], what: str, timeout: float = 20) -> Any:
    """GET `path` until `check(json)` holds."""

    def answer() -> Any:
        body = client.get(path).json()
        return body if check(body) else None

    return wait_until(answer, timeout, what)


def start(client: httpx.Client, definition: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post(f"/definitions/{definition}/instances", json={"variables": variables or {}})
    assert response.status_code == 201, response.text
    return response.json()


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text (labels come sorted by name), None when absent."""
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(f"{name}{{{label_text}}}" if labels else name) + r" ([0-9.e+-]+)$"
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_probes_and_metrics_with_a_kafka_trigger(database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path) -> None:
    topic = f"heatpump-{uuid.uuid4().hex[:8]}"
    copy_example(tmp_path, "temperature-control.yaml", {"topic: heatpump-telemetry": f"topic: {topic}"})
    (tmp_path / "quick.yaml").write_text(QUICK, encoding="utf-8")
    create_topic(kafka_bootstrap, topic)
    recorder = mqtt_recorder("home/heatpump/control")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, f"g-{uuid.uuid4().hex[:8]}")
    with running_engine(settings) as engine, control_plane(engine) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert {name: check["ok"] for name, check in ready.json()["checks"].items()} == {
            "workers": True, "database": True, "broker": True, "mqtt": True,
        }
        produce_json(kafka_bootstrap, topic, [
            {"tags": {"device_id": "hp-1"}, "fields": {"flow_temp_c": 27.5}},
            "not json",
        ])
        recorder.wait_for(1, timeout=20)
        wait_until(lambda: client.get("/instances", params={"definition": "temperature-control"}).json()["instances"], 20, "the hot reading's instance")
        # Both messages are committed: nothing is left to consume on the one partition.
        wait_until(lambda: engine.lag_sampler.sample() == {(topic, 0): 0}, 10, "a lag sample of 0")
        quick = start(client, "quick", {"device": "q-1"})
        poll(client, f"/instances/{quick['id']}", lambda body: body["status"] == "completed", "quick to complete")
        metrics = client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
    assert sample(text, "process_engine_messages_consumed_total") == 2
    assert sample(text, "process_engine_messages_dead_lettered_total") == 1
    assert sample(text, "process_engine_instances_started_total", definition="temperature-control") == 1
    assert sample(text, "process_engine_instances_started_total", definition="quick") == 1
    assert sample(text, "process_engine_instances_completed_total", definition="quick") == 1
    assert sample(text, "process_engine_trigger_to_completion_seconds_count", definition="quick") == 1
    assert sample(text, "process_engine_timer_lateness_seconds_count") == 1
    assert sample(text, "process_engine_step_latency_seconds_count") >= 1
    assert sample(text, "process_engine_action_attempts_total", action="mqtt_publish") == 1
    assert sample(text, "process_engine_action_attempts_total", action="log") == 1
    assert sample(text, "process_engine_consumer_lag", topic=topic, partition="0") == 0
    for name in ("process_engine_instances_failed", "process_engine_action_failures"):
        assert f"# TYPE {name}" in text


def test_readyz_names_what_is_down(client: httpx.Client, api_engine: Engine) -> None:
    api_engine.mqtt.close()
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    assert not checks["mqtt"]["ok"] and "MQTT_URL" in checks["mqtt"]["error"]


def test_definitions_list_active_ones_and_broken_files(client: httpx.Client, api_engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("id: broken\ntrigger: {type: api}\nactivities:\n  - {id: start, type: start, next: nowhere}\n")
    api_engine.folder.scan()
    body = client.get("/definitions").json()
    by_id = {d["id"]: d for d in body["definitions"]}
    assert sorted(by_id) == ["fragile", "hold", "quick"]
    assert by_id["hold"]["name"] == "Hold for an hour" and by_id["hold"]["version"] == 1
    assert by_id["hold"]["trigger"]["type"] == "api" and by_id["hold"]["file"].endswith("hold.yaml")
    problems = body["errors"]
    assert problems and all(p["file"].endswith("broken.yaml") and p["line"] for p in problems)
    assert any("unknown activity 'nowhere'" in p["reason"] for p in problems)


def test_start_list_and_detail_with_history(client: httpx.Client) -> None:
    first = start(client, "hold", {"device": "d-1"})
    assert first["status"] == "running" and first["current_activity"] == "wait_an_hour"
    assert first["variables"] == {"device": "d-1"}
    start(client, "hold")
    listed = client.get("/instances", params={"definition": "hold", "status": "running"}).json()["instances"]
    assert {i["id"] for i in listed} >= {first["id"]} and len(listed) == 2
    assert client.get("/instances", params={"status": "completed"}).json()["instances"] == []
    assert len(client.get("/instances", params={"limit": 1}).json()["instances"]) == 1
    detail = client.get(f"/instances/{first['id']}").json()
    assert detail["id"] == first["id"]
    assert [h["event_type"] for h in detail["history"]][0] == "started"


def test_bad_requests_are_clear_json_errors(client: httpx.Client) -> None:
    cases = [
        (client.get("/instances", params={"status": "sleeping"}), 400, "status must be one of"),
        (client.get("/instances", params={"limit": "lots"}), 400, "limit"),
        (client.get(f"/instances/{uuid.uuid4()}"), 404, "GET /instances"),
        (client.get("/instances/not-a-uuid"), 404, "no instance"),
        (client.post("/definitions/nope/instances", json={}), 404, "GET /definitions"),
        (client.post("/definitions/hold/instances", content=b"{"), 400, "not JSON"),
        (client.post("/definitions/hold/instances", json={"variables": [1]}), 400, "variables"),
        (client.post(f"/instances/{uuid.uuid4()}/cancel"), 404, "no instance"),
        (client.post(f"/instances/{uuid.uuid4()}/explode"), 404, "unknown action"),
        (client.get("/nowhere"), 404, "no endpoint"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert text in response.json()["error"], response.text


def test_suspend_resume_and_cancel(client: httpx.Client) -> None:
    instance_id = start(client, "hold")["id"]

    def act(action: str) -> httpx.Response:
        return client.post(f"/instances/{instance_id}/{action}")

    assert act("resume").status_code == 409
    suspended = act("suspend")
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    again = act("suspend")
    assert again.status_code == 409 and "it is suspended" in again.json()["error"]
    resumed = act("resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    assert resumed.json()["current_activity"] == "wait_an_hour"
    cancelled = act("cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert act("cancel").status_code == 409 and act("retry").status_code == 409
    events = [h["event_type"] for h in client.get(f"/instances/{instance_id}").json()["history"]]
    assert [e for e in events if e in ("suspended", "resumed", "cancelled")] == ["suspended", "resumed", "cancelled"]


def test_retry_runs_a_failed_instance_again(client: httpx.Client) -> None:
    instance_id = start(client, "fragile")["id"]
    failed = poll(client, f"/instances/{instance_id}", lambda body: body["status"] == "failed", "fragile to fail")
    assert "http" in failed["error"]
    retried = client.post(f"/instances/{instance_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "running" and retried.json()["current_activity"] == "call"
    again = poll(client, f"/instances/{instance_id}", lambda body: body["status"] == "failed", "the retry to fail again")
    events = [h["event_type"] for h in again["history"]]
    assert events.count("retried") == 1 and events.count("action_failed") == 2
    metrics = client.get("/metrics").text
    assert sample(metrics, "process_engine_action_failures_total", action="http") == 2
    assert sample(metrics, "process_engine_instances_failed_total", definition="fragile") == 2


def test_every_route_but_probes_and_metrics_needs_the_token(client: httpx.Client) -> None:
    anonymous = httpx.Client(base_url=str(client.base_url), timeout=10, headers={"Content-Type": "application/json"})
    with anonymous:
        refused = anonymous.post("/definitions/hold/instances", json={})
        assert refused.status_code == 401 and "Bearer" in refused.json()["error"]
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.post("/definitions/hold/instances", json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        basic = anonymous.post("/definitions/hold/instances", json={}, headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        assert anonymous.post(f"/instances/{uuid.uuid4()}/cancel").status_code == 401
        # Reads too: history holds telemetry and action payloads.
        for path in ("/definitions", "/instances", f"/instances/{uuid.uuid4()}", "/nowhere"):
            response = anonymous.get(path)
            assert response.status_code == 401 and "PROCESS_ENGINE_API_TOKEN" in response.json()["error"], path
        for path in ("/healthz", "/readyz", "/metrics"):
            assert anonymous.get(path).status_code == 200, path
    assert client.post("/definitions/hold/instances", json={}).status_code == 201
    assert client.get("/instances").status_code == 200


def test_without_a_token_the_api_is_read_only(api_engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="process_engine.http"), control_plane(api_engine, token=None) as open_client:
        refused = open_client.post("/definitions/hold/instances", json={"variables": {"device": "d-9"}})
        assert refused.status_code == 403, refused.text
        assert "PROCESS_ENGINE_API_TOKEN" in refused.json()["error"]
        assert open_client.post(f"/instances/{uuid.uuid4()}/cancel").status_code == 403
        assert open_client.get("/instances").json()["instances"] == []  # nothing was started
        assert open_client.get("/definitions").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "read-only" in warnings[0] and "PROCESS_ENGINE_API_TOKEN" in warnings[0]


def test_healthz_fails_once_the_engine_stops(client: httpx.Client, api_engine: Engine) -> None:
    api_engine.stop_event.set()
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "stopping"
    assert client.get("/readyz").status_code == 503
