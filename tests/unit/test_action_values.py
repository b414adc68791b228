"""`${}` values inside URLs and MQTT topics: percent-encoded in a URL, kept to one level in a topic."""

from __future__ import annotations

import pytest

from process_engine.adapters.actions.http_request import url_value
from process_engine.adapters.actions.messaging import topic_value
from process_engine.domain.templates import compile_config
from tests.unit.walking import definition_from

DEFINITION = """
id: values
trigger: {type: api}
variables:
  - {name: room, source: room}
  - {name: base, source: base}
activities:
  - {id: start, type: start}
  - id: call
    type: service
    action: http
    config: {method: GET, url: "http://printer.lan:8080/rooms/${room}/status?name=${room}", headers: {X-Room: "${room}"}}
  - id: based
    type: service
    action: http
    config: {url: "${base}/rooms/${room}"}
  - id: whole
    type: service
    action: http
    config: {url: "${base}"}
  - id: publish
    type: service
    action: mqtt_publish
    config: {topic: "home/${room}/set", payload: "${room}"}
  - {id: end, type: end}
"""


def rendered(activity: str, **variables: str) -> dict:
    return definition_from(DEFINITION).activities[activity].config.render(variables)


def test_a_value_in_a_url_path_or_query_cannot_change_the_url() -> None:
    config = rendered("call", room="x/../../admin?debug=1#top", base="")
    assert config["url"] == (
        "http://printer.lan:8080/rooms/x%2F..%2F..%2Fadmin%3Fdebug%3D1%23top/status?name=x%2F..%2F..%2Fadmin%3Fdebug%3D1%23top"
    )
    assert config["headers"] == {"X-Room": "x/../../admin?debug=1#top"}  # only the URL is a URL


def test_a_value_after_a_base_url_is_encoded_and_the_base_is_not() -> None:
    config = rendered("based", base="http://printer.lan:8080/api", room="kitchen & hall")
    assert config["url"] == "http://printer.lan:8080/api/rooms/kitchen%20%26%20hall"
    assert rendered("whole", base="http://printer.lan/a b")["url"] == "http://printer.lan/a b"  # a lone ${} is the whole URL


@pytest.mark.parametrize(
    ("before", "value", "expected"),
    [
        ("", "http://h/x", "http://h/x"),
        ("http://", "printer.lan:8080", "printer.lan:8080"),
        ("http://", "[fd00::1]:80", "[fd00::1]:80"),
        ("http://", "evil.example/x?", "evil.example%2Fx%3F"),
        ("http://", "user@evil.example", "user%40evil.example"),
        ("http://h/", "a/b", "a%2Fb"),
        ("http://h?q=", "1&admin=true", "1%26admin%3Dtrue"),
        ("http://h#", "x/y", "x%2Fy"),
    ],
)
def test_url_values_by_where_they_land(before: str, value: str, expected: str) -> None:
    assert url_value(before, value) == expected


def test_a_value_in_a_topic_is_escaped_so_the_action_can_refuse_it() -> None:
    assert rendered("publish", room="kitchen")["topic"] == "home/kitchen/set"
    assert rendered("publish", room="a/b+#\x00")["topic"] == "home/a%2Fb%2B%23%00/set"
    assert topic_value("home/", "50%") == "50%"  # nothing else changes


def test_compile_config_encodes_only_the_keys_named() -> None:
    template = compile_config({"url": "http://h/${x}", "body": "${x}/${x}", "other": "${x}"}, {"url": url_value, "other": url_value})
    assert template.render({"x": "a/b"}) == {"url": "http://h/a%2Fb", "body": "a/b/a/b", "other": "a/b"}
    assert template.names == frozenset({"x"})
