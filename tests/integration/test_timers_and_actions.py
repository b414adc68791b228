"""Durable timers, waits and service actions in a running engine, against real MQTT and a dead HTTP port."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.http import http_server
from tests.fixtures.kafka import create_topic, free_port, produce_json
from tests.integration.engine_harness import engine_settings, running_engine, seed_copy, telemetry, unique

LOOPBACK = "127.0.0.1"  # the test servers listen there, which http actions may not call by default

pytestmark = pytest.mark.integration


def finished(store, instance_id: str):
    """The instance once it is no longer running."""
    instance = store.load(instance_id)
    return instance if instance is not None and instance.status != "running" else None


def events(store, instance_id: str) -> list[tuple[str | None, str]]:
    """(activity, event type) of every history row, oldest first."""
    return [(h.activity_id, h.event_type) for h in store.history(instance_id)]


def test_the_seed_end_to_end_publishes_the_command_and_after_the_timer_the_alert(
    database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, tmp_path: Path
) -> None:
    topic = unique("heatpump")
    seed_copy(tmp_path, topic, timer="2s")
    create_topic(kafka_bootstrap, topic)
    commands = mqtt_recorder("home/heatpump/control")
    alerts = mqtt_recorder("process-engine/notify/alert")  # settings.DEFAULT_NOTIFY_TARGET
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    with running_engine(settings) as engine:
        produce_json(kafka_bootstrap, topic, [telemetry("hp-7", 31.0)])
        [command] = commands.wait_for(1, timeout=20)
        [instance] = engine.store.find_instances(InstanceQuery())
        assert command.json() == {"device_id": "hp-7", "command": "activate_cooling"}
        [alert] = alerts.wait_for(1, timeout=20)  # still hot after the timer: escalate
        assert alert.json() == {
            "channel": "alert",
            "message": "Temperature still high after cooling",
            "instance_id": instance.id,
            "activity_id": "escalate",
        }
        if commands.protocol == "5":
            assert command.user_properties == {"idempotency-key": f"{instance.id}:activate_cooling:1"}
            assert alert.user_properties == {"idempotency-key": f"{instance.id}:escalate:1"}
        done = wait_until(lambda: finished(engine.store, instance.id), 10, "the instance to complete")
        assert done.status == "completed"
        path = [activity for activity, event in events(engine.store, instance.id) if event == "completed"]
        assert path == ["start", "check_temp", "activate_cooling", "wait_recheck", "recheck_temp", "escalate", "end"]
        timer = [h for h in engine.store.history(instance.id) if h.activity_id == "wait_recheck" and h.event_type == "completed"]
        scheduled = [h for h in engine.store.history(instance.id) if h.event_type == "timer_scheduled"]
        assert (timer[0].timestamp - scheduled[0].timestamp).total_seconds() >= 2.0


WAIT = """
id: tank-wait
name: Wait for the level to drop, or give up
trigger: {type: api}
variables:
  - {name: level, value: 20}
activities:
  - {id: start, type: start}
  - id: until_low
    type: wait
    condition: ${level} < 5
    timeout: 1s
    timeout_path: gave_up
    next: drained
  - {id: drained, type: service, action: log, config: {message: drained}, next: done}
  - {id: gave_up, type: service, action: log, config: {message: "gave up at ${level}"}, next: done}
  - {id: done, type: end}
"""


def test_a_wait_that_times_out_takes_its_timeout_path(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    (tmp_path / "tank-wait.yaml").write_text(WAIT)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    with running_engine(settings) as engine:
        instance = engine.dispatcher.start("tank-wait", {"level": 20})
        assert instance.current_activity == "until_low"
        done = wait_until(lambda: finished(engine.store, instance.id), 15, "the wait to time out")
        assert done.status == "completed"
        history = events(engine.store, instance.id)
        assert ("until_low", "timeout") in history
        assert ("gave_up", "completed") in history and ("drained", "completed") not in history


HTTP = """
id: webhook-call
name: Call a webhook, fall back to a log line
trigger: {type: api}
activities:
  - {id: start, type: start}
  - id: call
    type: service
    action: http
    config: {method: POST, url: "URL", body: {hello: world}, timeout: 2s}
    retry: {max_attempts: 3, backoff: 200ms}
    on_error: fallback
    next: done
  - {id: fallback, type: service, action: log, config: {message: webhook unreachable}, next: done}
  - {id: done, type: end}
"""


def test_an_unreachable_http_endpoint_is_retried_then_on_error_runs(database_url, kafka_bootstrap, mqtt_url, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    (tmp_path / "webhook-call.yaml").write_text(HTTP.replace("URL", url))
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"), HTTP_ACTION_ALLOW=LOOPBACK)
    with running_engine(settings) as engine:
        instance = engine.dispatcher.start("webhook-call", {})
        done = wait_until(lambda: finished(engine.store, instance.id), 20, "the retries and the error path")
        history = engine.store.history(instance.id)
    assert done.status == "completed"
    failures = [h for h in history if h.event_type == "action_failed"]
    assert [h.data["attempt"] for h in failures] == [1, 2, 3]
    requested = [h.data["key"] for h in history if h.event_type == "action_requested" and h.activity_id == "call"]
    assert requested == [f"{instance.id}:call:{attempt}" for attempt in (1, 2, 3)]
    after = [(h.activity_id, h.event_type) for h in history[history.index(failures[-1]) + 1:]]
    assert after[:3] == [("call", "error_path"), ("fallback", "action_requested"), ("fallback", "completed")]
    assert ("call", "completed") not in [(h.activity_id, h.event_type) for h in history]
    gaps = [(b.timestamp - a.timestamp).total_seconds() for a, b in zip(failures, failures[1:])]
    assert all(gap >= 0.15 for gap in gaps), gaps  # 200 ms backoff, 10 % jitter


TIMED = """
id: ID
name: A timer, then a step
trigger: {type: api}
variables:
  - {name: due, value: "2000-01-01T00:00:00+00:00"}
activities:
  - {id: start, type: start}
  - {id: pause, type: timer, until: "${due}"}
  - {id: compute, type: set, set: {result: "EXPRESSION"}}
  - {id: done, type: end}
"""


def test_a_timer_whose_step_cannot_be_stored_does_not_hold_up_the_timers_due_with_it(
    database_url, kafka_bootstrap, mqtt_url, tmp_path: Path
) -> None:
    (tmp_path / "fine.yaml").write_text(TIMED.replace("ID", "fine-timer").replace("EXPRESSION", "1 + 1"))
    # A NUL character: a valid Python string, refused by jsonb and so by the store.
    (tmp_path / "poison.yaml").write_text(TIMED.replace("ID", "poison-timer").replace("EXPRESSION", "'a\\\\x00b'"))
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    with running_engine(settings) as engine:
        due = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
        poison = engine.dispatcher.start("poison-timer", {"due": due})
        fine = [engine.dispatcher.start("fine-timer", {"due": due}) for _ in range(3)]
        for instance in fine:
            done = wait_until(lambda: finished(engine.store, instance.id), 10, "the good timers to fire")
            assert done.status == "completed" and done.variables["result"] == 2
        assert engine.store.load(poison.id).current_activity == "pause"


class NulAnswer(BaseHTTPRequestHandler):
    """Answers every POST with JSON holding a NUL character, which jsonb cannot store."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(self.headers.get("Idempotency-Key"))
        content = b'{"status": "ok\\u0000"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def nul_server():
    with http_server(NulAnswer) as server:
        yield server


def test_an_action_result_the_store_cannot_hold_still_completes_the_step(database_url, kafka_bootstrap, mqtt_url, nul_server, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{nul_server.server_address[1]}/hook"
    (tmp_path / "webhook-call.yaml").write_text(HTTP.replace("URL", url))
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"), HTTP_ACTION_ALLOW=LOOPBACK)
    with running_engine(settings) as engine:
        instance = engine.dispatcher.start("webhook-call", {})
        done = wait_until(lambda: finished(engine.store, instance.id), 10, "the call to complete")
        history = events(engine.store, instance.id)
    assert done.status == "completed"
    assert ("call", "completed") in history and ("fallback", "completed") not in history
    assert nul_server.requests == [f"{instance.id}:call:1"]  # delivered once, not again after the lease


class Hanging(BaseHTTPRequestHandler):
    """Holds every request until the test releases it: a webhook that stopped answering."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(self.path)
        self.server.release.wait(10)
        try:
            self.send_response(204)
            self.end_headers()
        except OSError:
            pass  # the client gave up already

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hanging_server():
    with http_server(Hanging) as server:
        yield server


QUICK = """
id: quick-command
name: One MQTT command
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: command, type: service, action: mqtt_publish, config: {topic: "RUN/command", payload: {go: true}}}
  - {id: done, type: end}
"""


def test_a_hanging_webhook_does_not_hold_up_other_actions(
    database_url, kafka_bootstrap, mqtt_url, mqtt_recorder, hanging_server, tmp_path: Path
) -> None:
    run = unique("quick")
    url = f"http://127.0.0.1:{hanging_server.server_address[1]}/hook"
    (tmp_path / "webhook-call.yaml").write_text(HTTP.replace("URL", url).replace("timeout: 2s", "timeout: 8s"))
    (tmp_path / "quick-command.yaml").write_text(QUICK.replace("RUN", run))
    recorder = mqtt_recorder(f"{run}/#")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"), HTTP_ACTION_ALLOW=LOOPBACK)
    with running_engine(settings) as engine:
        engine.dispatcher.start("webhook-call", {})
        wait_until(lambda: hanging_server.requests, 10, "the webhook call to hang")
        quick = engine.dispatcher.start("quick-command", {})
        recorder.wait_for(1, timeout=3)  # not after the webhook's 8 s timeout
        assert wait_until(lambda: finished(engine.store, quick.id), 3, "the command's step").status == "completed"
        hanging_server.release.set()
