"""Hostile requests to the HTTP API of a real engine: each gets its clear error, and the engine goes on."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from process_engine.app import Engine
from process_engine.domain.errors import StoreError, StoreUnavailable
from tests.integration.engine_harness import engine_settings, running_engine
from tests.integration.test_http_api import HOLD, TOKEN, control_plane, start

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
# Settable `device`, and a static `site` that an API start may not replace.
SITE = """
id: site
trigger: {type: api}
variables:
  - {name: device, source: device}
  - {name: site, value: plant-7}
activities:
  - {id: start, type: start}
  - {id: wait_an_hour, type: timer, duration: 1h}
  - {id: end, type: end}
"""


@pytest.fixture
def engine(database_url: str, kafka_bootstrap: str, mqtt_url: str, tmp_path: Path) -> Iterator[Engine]:
    (tmp_path / "hold.yaml").write_text(HOLD, encoding="utf-8")
    (tmp_path / "site.yaml").write_text(SITE, encoding="utf-8")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, f"g-{uuid.uuid4().hex[:8]}")
    with running_engine(settings) as running:
        yield running


@pytest.fixture
def client(engine: Engine) -> Iterator[httpx.Client]:
    with control_plane(engine) as client:
        yield client


def assert_error(response: httpx.Response, status: int, *words: str) -> str:
    """The response is a JSON error with this status whose message has every word."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert all(word in message for word in words), message
    return message


def nothing_started(client: httpx.Client) -> bool:
    return client.get("/instances").json()["instances"] == []


def test_mutating_calls_take_json_only(client: httpx.Client) -> None:
    url = f"{client.base_url}/definitions/hold/instances"
    cross_site = [  # what a web page can post to another site without asking first
        ("application/x-www-form-urlencoded", b"variables=1"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="v"\r\n\r\n{}\r\n--x--\r\n'),
        ("text/plain", b'{"variables": {}}'),
        ("application/jsonp", b'{"variables": {}}'),
        (None, b'{"variables": {}}'),
        (None, b""),
    ]
    for content_type, body in cross_site:
        headers = {"Authorization": f"Bearer {TOKEN}", **({"Content-Type": content_type} if content_type else {})}
        assert_error(httpx.post(url, content=body, headers=headers, timeout=10), 415, "application/json")
    assert_error(client.post(f"/instances/{uuid.uuid4()}/cancel", headers={"Content-Type": "text/plain"}), 415, "Content-Type")
    assert nothing_started(client)
    assert client.post(url, content=b'{"variables": {}}', headers={"Content-Type": "Application/JSON; charset=utf-8"}).status_code == 201


def test_bodies_over_1_mib_are_refused_while_they_are_read(client: httpx.Client) -> None:
    path = "/definitions/hold/instances"
    declared = client.post(path, content=b" " * (MIB + 1))
    assert_error(declared, 413, "1024 KiB")
    chunk = b" " * 65536

    def fifty_megabytes() -> Iterator[bytes]:
        for _ in range(50 * MIB // len(chunk)):
            yield chunk

    tracemalloc.start()
    try:
        streamed = client.post(path, content=fifty_megabytes())  # chunked: no Content-Length to refuse early
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_error(streamed, 413, "KiB")
    assert peak < 8 * MIB, f"a 50 MB body took {peak / MIB:.1f} MiB"
    body = b'{"variables": {"device": "d-1"}}'
    just_under = client.post(path, content=body + b" " * (MIB - len(body)))
    assert just_under.status_code == 201 and just_under.json()["variables"] == {"device": "d-1"}


def test_an_api_start_sets_only_declared_variables_without_a_static_value(client: httpx.Client) -> None:
    path = "/definitions/site/instances"
    static = client.post(path, json={"variables": {"device": "d-1", "site": "elsewhere"}})
    assert_error(static, 400, "'site'", "static value", "the API may set device")
    typo = client.post(path, json={"variables": {"devcie": "d-1"}})
    assert_error(typo, 400, "unknown variable 'devcie'", "did you mean 'device'?")
    none_settable = client.post("/definitions/hold/instances", json={"variables": {"site": "x"}})
    assert_error(none_settable, 400, "unknown variable 'site'")
    assert nothing_started(client)
    started = start(client, "site", {"device": "d-1"})
    assert started["variables"] == {"site": "plant-7", "device": "d-1"}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"variables": {"device": "a\\u0000b"}}', ("variable 'device'", "NUL", "remove it")),
        (b'{"variables": {"device": {"nested": ["\\u0000"]}}}', ("variable 'device'", "NUL")),
        (b'{"variables": {"device": "\\ud800"}}', ("variable 'device'", "lone surrogate")),
        (b"[" * 100_000 + b"]" * 100_000, ("nests too deep",)),
        (b'{"variables": {"device": 1', ("not JSON",)),
        (b'"just a string"', ("JSON object",)),
        (b'{"variables": {}, "extra": 1}', ('{"variables": {...}}',)),
    ],
)
def test_bodies_the_database_cannot_hold_are_400s_not_500s(client: httpx.Client, body: bytes, words: tuple[str, ...]) -> None:
    message = assert_error(client.post("/definitions/hold/instances", content=body), 400, *words)
    assert "psycopg" not in message and "jsonb" not in message
    assert nothing_started(client)
    assert start(client, "hold", {"device": "d-2"})["status"] == "running"  # and the engine goes on


def test_odd_authorization_headers_are_401s(client: httpx.Client) -> None:
    base = str(client.base_url)
    for value in (b"Bearer \xe9\xff", b"Bearer", b"bearer  " + TOKEN.encode() + b"x", TOKEN.encode(), b""):
        response = httpx.get(f"{base}/instances", headers=[(b"Authorization", value)], timeout=10)
        assert_error(response, 401, "Bearer")
    assert httpx.get(f"{base}/instances", headers={"Authorization": f"bearer {TOKEN}"}, timeout=10).status_code == 200
    assert httpx.get(f"{base}/instances?token={TOKEN}", timeout=10).status_code == 401


def test_unexpected_errors_are_generic_500s_with_the_details_in_the_log(
    client: httpx.Client, engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = 'relation "process_instances" password=hunter2 host=10.1.2.3'
    for failure, status in ((RuntimeError(secret), 500), (StoreError(secret), 500), (StoreUnavailable(secret), 503)):

        def broken(instance_id: str, failure: Exception = failure) -> None:
            raise failure

        monkeypatch.setattr(engine.store, "load", broken)
        with caplog.at_level("WARNING", logger="process_engine.http"):
            response = client.get(f"/instances/{uuid.uuid4()}")
        message = assert_error(response, status)
        assert "hunter2" not in response.text and "relation" not in response.text
        assert ("incident" in message) if status == 500 else ("DATABASE_URL" in message)
        assert any("hunter2" in record.getMessage() for record in caplog.records)
        if status == 500:
            incident = message.split("incident ")[1].split(")")[0]
            assert any(incident in record.getMessage() for record in caplog.records)
        caplog.clear()
    monkeypatch.undo()
    assert client.get("/healthz").status_code == 200 and start(client, "hold", {"device": "d-3"})["status"] == "running"


def test_every_refusal_is_json_naming_the_fix(client: httpx.Client, engine: Engine) -> None:
    anonymous = httpx.Client(base_url=str(client.base_url), timeout=10)
    with anonymous:
        body = json.dumps({"variables": {}})
        answers = [
            anonymous.post("/definitions/hold/instances", content=body, headers={"Content-Type": "application/json"}),
            anonymous.get("/definitions"),
            client.post("/definitions/hold/instances", content=body, headers={"Content-Type": "text/plain"}),
            client.post("/definitions/hold/instances", content=b" " * (MIB + 1)),
            client.post("/definitions/nope/instances", content=body),
        ]
    for response, status, fix in zip(answers, (401, 401, 415, 413, 404), ("Authorization: Bearer", "PROCESS_ENGINE_API_TOKEN", "application/json", "smaller", "GET /definitions")):
        assert_error(response, status, fix)
