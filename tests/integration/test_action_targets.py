"""Where actions may go: http destinations checked after DNS, MQTT topics whose values stay in their level.

Against a real loopback HTTP server and the MQTT broker. Names that no DNS server
here knows (`printer.test`) resolve through an injected resolver, as a LAN's DNS would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from process_engine.adapters.actions import ActionContext, ActionRegistry, DestinationPolicy, builtin_registry
from process_engine.adapters.actions.destinations import CheckedTransport
from process_engine.adapters.mqtt.publisher import MqttPublisher, MqttSettings
from process_engine.domain.errors import ActionError
from tests.fixtures.http import http_server as serve_http

pytestmark = pytest.mark.integration
CONTEXT = ActionContext("inst-1:call:1", "inst-1", "call", 1, "targets")


class Target(BaseHTTPRequestHandler):
    """Records every request; /redirect sends to /admin on 127.0.0.1, /big and /utf8 answer 5,000 bytes."""

    def do_GET(self) -> None:
        self.server.requests.append({"path": self.path, "host": self.headers["Host"]})
        port = self.server.server_address[1]
        if self.path == "/redirect":
            self._answer(302, b"", {"Location": f"http://127.0.0.1:{port}/admin"})
        elif self.path == "/big":
            self._answer(200, json.dumps({"x": "y" * 5000}).encode(), {"Content-Type": "application/json"})
        elif self.path == "/utf8":
            self._answer(200, "é".encode() * 2500, {"Content-Type": "text/plain; charset=utf-8"})
        else:
            self._answer(200, b'{"secret": "admin page"}', {"Content-Type": "application/json"})

    do_POST = do_GET

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def target_server():
    with serve_http(Target) as server:
        yield server


@pytest.fixture
def port(target_server) -> int:
    target_server.requests.clear()
    return target_server.server_address[1]


@pytest.fixture
def registry() -> Iterator[Callable[..., ActionRegistry]]:
    made: list[ActionRegistry] = []

    def make(policy: DestinationPolicy | None = None, **options) -> ActionRegistry:
        made.append(builtin_registry(destinations=policy or DestinationPolicy(), **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


def names(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    """A resolver answering from `table` (a LAN's DNS); other names do not resolve."""

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


def refused(registry: ActionRegistry, url: str) -> str:
    with pytest.raises(ActionError) as caught:
        registry.run("http", {"method": "GET", "url": url, "timeout": 2}, CONTEXT)
    assert not caught.value.retriable
    return str(caught.value)


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("[::1]", "loopback"),
        ("127.1", "loopback"),  # 127.0.0.1 spelled short
        ("2130706433", "loopback"),  # 127.0.0.1 as one number
        ("[::ffff:127.0.0.1]", "loopback"),
        ("169.254.169.254", "link-local"),
        ("[fe80::1]", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("printer.test", "loopback"),  # a name that resolves to loopback
    ],
)
def test_the_default_refuses_loopback_link_local_and_unspecified(registry, target_server, port: int, host: str, kind: str) -> None:
    actions = registry(DestinationPolicy(resolve=names({"printer.test": ["127.0.0.1"]})) if host == "printer.test" else None)
    message = refused(actions, f"http://{host}:{port}/admin")
    assert kind in message and "HTTP_ACTION_ALLOW" in message
    assert target_server.requests == []


def test_the_allow_list_replaces_the_default(registry, target_server, port: int) -> None:
    allowed = registry(DestinationPolicy.from_setting("127.0.0.0/8"))
    assert allowed.run("http", {"method": "GET", "url": f"http://127.0.0.1:{port}/ok"}, CONTEXT)["status"] == 200
    lan_only = registry(DestinationPolicy.from_setting("10.0.0.0/8,printer.lan"))
    assert "127.0.0.1 is not in HTTP_ACTION_ALLOW" in refused(lan_only, f"http://127.0.0.1:{port}/admin")
    assert [r["path"] for r in target_server.requests] == ["/ok"]


def test_the_connection_goes_to_the_address_checked_with_the_name_kept(registry, target_server, port: int) -> None:
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    actions = registry(DestinationPolicy.from_setting("*.plant.test", resolve))
    result = actions.run("http", {"method": "GET", "url": f"http://device.plant.test:{port}/status"}, CONTEXT)
    assert result["status"] == 200
    assert target_server.requests == [{"path": "/status", "host": f"device.plant.test:{port}"}]
    assert asked == ["device.plant.test"]  # resolved once: nothing can swap the address after the check


def test_a_rebinding_name_cannot_reach_loopback_after_its_check(registry, target_server, port: int) -> None:
    answers = iter([["192.0.2.10"]])  # public for the check; any later lookup would say 127.0.0.1

    def resolve(host: str, port: int) -> list[str]:
        return next(answers, ["127.0.0.1"])

    actions = registry(DestinationPolicy(resolve=resolve))
    with pytest.raises(ActionError) as caught:
        actions.run("http", {"method": "GET", "url": f"http://rebind.test:{port}/admin", "timeout": "300ms"}, CONTEXT)
    assert caught.value.retriable  # 192.0.2.10 (a documentation address) does not answer
    assert target_server.requests == []


def test_redirects_are_not_followed_and_each_hop_would_be_checked(registry, target_server, port: int) -> None:
    policy = DestinationPolicy.from_setting("hooks.test", names({"hooks.test": ["127.0.0.1"], "127.0.0.1": ["127.0.0.1"]}))
    result = registry(policy).run("http", {"method": "GET", "url": f"http://hooks.test:{port}/redirect"}, CONTEXT)
    assert result["status"] == 302
    with httpx.Client(transport=CheckedTransport(policy), follow_redirects=True) as following:
        with pytest.raises(ActionError, match="127.0.0.1 is not in HTTP_ACTION_ALLOW"):
            following.get(f"http://hooks.test:{port}/redirect")
    assert [r["path"] for r in target_server.requests] == ["/redirect", "/redirect"]  # never /admin


def test_the_engines_own_http_address_is_refused_even_when_allowed(registry, target_server, port: int) -> None:
    for own_host in ("127.0.0.1", "0.0.0.0"):
        policy = DestinationPolicy.from_setting("127.0.0.1")
        policy.serving(own_host, port)
        assert "engine's own HTTP address" in refused(registry(policy), f"http://127.0.0.1:{port}/instances")
    assert target_server.requests == []


def test_response_bodies_are_cut_to_1_kib(registry, port: int) -> None:
    actions = registry(DestinationPolicy.from_setting("127.0.0.1"))
    big = actions.run("http", {"method": "GET", "url": f"http://127.0.0.1:{port}/big"}, CONTEXT)
    assert big["truncated"] is True and len(big["body"].encode()) == 1024 and big["body"].startswith('{"x": "yyy')
    text = actions.run("http", {"method": "GET", "url": f"http://127.0.0.1:{port}/utf8"}, CONTEXT)
    assert text["body"] == "é" * 512  # cut on a character boundary
    small = actions.run("http", {"method": "GET", "url": f"http://127.0.0.1:{port}/ok"}, CONTEXT)
    assert small == {"status": 200, "body": {"secret": "admin page"}}


@pytest.fixture(scope="module")
def mqtt_publisher(mqtt_url):
    with MqttPublisher(MqttSettings.from_url(mqtt_url)) as publisher:
        yield publisher


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("pe-targets/a%2F..%2F%23/set", "holds '/' and '#'"),  # how a rendered `${room}` of "a/../#" looks
        ("pe-targets/x%00/set", "holds NUL"),
        ("pe-targets/+/set", "wildcards"),  # a whole topic from one variable
    ],
)
def test_mqtt_publish_refuses_values_that_leave_their_level(registry, mqtt_publisher, mqtt_recorder, topic: str, reason: str) -> None:
    recorder = mqtt_recorder("pe-targets/#")
    actions = registry(mqtt=mqtt_publisher)
    with pytest.raises(ActionError, match=reason) as caught:
        actions.run("mqtt_publish", {"topic": topic, "payload": "open"}, CONTEXT)
    assert not caught.value.retriable and "topic" in str(caught.value)
    actions.run("mqtt_publish", {"topic": "pe-targets/kitchen/set", "payload": "ok"}, CONTEXT)
    [message] = recorder.wait_for(1)  # the one good publish is the only one
    assert message.topic == "pe-targets/kitchen/set"


def test_notify_channels_stay_in_their_topic_level_and_url_segment(registry, mqtt_publisher, target_server, port: int) -> None:
    into_topic = registry(mqtt=mqtt_publisher, notify_default_target="mqtt:pe-targets/notify/{channel}")
    with pytest.raises(ActionError, match="holds '/'") as caught:
        into_topic.run("notify", {"channel": "alert/../../admin", "message": "x"}, CONTEXT)
    assert not caught.value.retriable
    into_url = registry(DestinationPolicy.from_setting("127.0.0.1"), notify_default_target=f"http://127.0.0.1:{port}/hooks/{{channel}}")
    into_url.run("notify", {"channel": "a/../../admin", "message": "x"}, CONTEXT)
    assert [r["path"] for r in target_server.requests] == ["/hooks/a%2F..%2F..%2Fadmin"]
