"""The console over HTTP (uvicorn, the memory store): sign-in, headers, escaping, filters and pages.

What the browser shows is in test_console_browser.py; this is what any client gets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from process_engine.adapters.definitions.folder import DefinitionFolder
from process_engine.adapters.http.console import CONTENT_SECURITY_POLICY, console_app
from process_engine.adapters.http.server import HttpServer
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.app import definition_extensions
from process_engine.domain.instance import InstanceState, Token
from process_engine.engine.commands import RecordHistory
from process_engine.ports import DeadLetter, MessageCoordinate, Step
from process_engine.runtime.registry import DefinitionRegistry

pytestmark = pytest.mark.integration
TOKEN = "console-s3cret"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
HOSTILE = """
id: hostile
name: "<img src=x onerror=alert(1)>"
trigger: {type: kafka, topic: "t<script>", condition: "fields.x > 1"}
activities:
  - {id: start, type: start}
  - {id: "<b>end</b>", type: end}
"""


@dataclass
class Source:
    """What the console reads: a real store, registry and definitions folder."""

    store: MemoryInstanceStore
    registry: DefinitionRegistry
    folder: DefinitionFolder


@pytest.fixture
def source(tmp_path: Path) -> Source:
    (tmp_path / "hostile.yaml").write_text(HOSTILE, encoding="utf-8")
    (tmp_path / "seed.yaml").write_text((Path(__file__).parents[2] / "processes" / "temperature-control.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    store = MemoryInstanceStore()
    registry = DefinitionRegistry(store, definition_extensions())
    folder = DefinitionFolder(tmp_path, registry, definition_extensions())
    folder.scan()
    return Source(store, registry, folder)


@contextmanager
def console(source: Source, token: str | None, trace_url: str | None = None) -> Iterator[httpx.Client]:
    server = HttpServer(console_app(source, token, trace_url), "127.0.0.1", 0).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10, follow_redirects=False) as client:
            yield client
    finally:
        server.stop()


def add_instances(source: Source, count: int, **changes: object) -> list[InstanceState]:
    """`count` seed instances, one a minute apart from T0, committed to the store."""
    made = []
    for n in range(count):
        fields: dict[str, object] = dict(
            id=str(uuid.uuid4()), definition_id="temperature-control", definition_version=1, started_at=T0 + timedelta(minutes=n),
            tokens=(Token("t1", "wait_recheck", waiting="timer"),), correlation_key=f"hp-{n % 3}", variables={"temperature": 20 + n},
        )
        made.append(InstanceState(**{**fields, **changes}))  # type: ignore[arg-type]
    source.store.commit([Step(state, None) for state in made])
    return made


def test_without_a_token_the_console_is_open_read_only_and_sends_its_headers(source: Source) -> None:
    [instance] = add_instances(source, 1)
    with console(source, None) as client:
        page = client.get("/ui")
        assert page.status_code == 200 and "read-only: PROCESS_ENGINE_API_TOKEN is not set" in page.text
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe-eval" not in CONTENT_SECURITY_POLICY
        assert (page.headers["x-content-type-options"], page.headers["cache-control"], page.headers["x-frame-options"]) == ("nosniff", "no-store", "DENY")
        assert "<script>" not in page.text and "<script src=" in page.text  # no inline script for the CSP to allow
        trace = client.get(f"/ui/instances/{instance.id}")
        assert trace.status_code == 200 and "data-action" not in trace.text and "Sign in" not in trace.text
        assert client.get("/ui/login").headers["location"] == "/ui"
        assert client.get("/ui/session/token").status_code == 403
        script = client.get("/ui/static/console.js")
        assert script.status_code == 200 and script.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert client.get("/ui/static/mermaid.min.js").status_code == 200


def test_with_a_token_every_page_asks_for_it_once(source: Source) -> None:
    [instance] = add_instances(source, 1)
    [failed] = add_instances(source, 1, status="failed", tokens=(Token("t1", "wait_recheck", waiting="failed"),))
    with console(source, TOKEN) as client:
        for path in ("/ui", "/ui/instances?status=running", f"/ui/instances/{instance.id}", "/ui/dead-letters", "/ui/definitions/hostile"):
            refused = client.get(path)
            assert refused.status_code == 303 and refused.headers["location"].startswith("/ui/login?next="), path
        assert client.get("/ui/session/token").status_code == 401
        form = client.get("/ui/login?next=/ui/instances%3Fstatus%3Drunning")
        assert 'type="password" name="token"' in form.text and 'value="/ui/instances?status=running"' in form.text

        wrong = client.post("/ui/login", data={"token": TOKEN + "x", "next": "/ui/instances"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers and "That is not the PROCESS_ENGINE_API_TOKEN" in wrong.text
        as_json = client.post("/ui/login", json={"token": TOKEN})
        assert as_json.status_code == 401 and "set-cookie" not in as_json.headers
        elsewhere = client.post("/ui/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert elsewhere.headers["location"] == "/ui"

        client.cookies.clear()
        signed = client.post("/ui/login", data={"token": TOKEN, "next": "/ui/instances?status=running"})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/instances?status=running"
        cookie = signed.headers["set-cookie"]
        assert all(flag in cookie for flag in ("HttpOnly", "SameSite=strict", "Path=/ui")) and TOKEN not in cookie
        assert client.get("/ui/instances?status=running").status_code == 200
        trace = client.get(f"/ui/instances/{instance.id}")
        assert 'data-action="suspend"' in trace.text and 'data-action="cancel"' in trace.text and TOKEN not in trace.text
        retry = client.get(f"/ui/instances/{failed.id}").text
        assert 'data-action="retry"' in retry and 'data-action="suspend"' not in retry
        assert client.get("/ui/session/token").json() == {"token": TOKEN}

        forged = httpx.Client(base_url=str(client.base_url), cookies={"process_engine_console": "0" * 64}, follow_redirects=False)
        with forged:
            assert forged.get("/ui").status_code == 303 and forged.get("/ui/session/token").status_code == 401
        out = client.post("/ui/logout")
        assert out.status_code == 303 and 'process_engine_console=""' in out.headers["set-cookie"]
        client.cookies.clear()
        assert client.get("/ui").status_code == 303


def test_what_definitions_and_messages_hold_is_shown_escaped(source: Source) -> None:
    letter = DeadLetter(MessageCoordinate("t<script>", 0, 7), "not JSON: <b>bad</b>", b"<script>alert(1)</script>", b"<k>", None)
    source.store.commit([], dead_letters=[letter])
    with console(source, None) as client:
        definitions = client.get("/ui").text
        assert "&lt;img src=x onerror=alert(1)&gt;" in definitions and "<img src=x" not in definitions
        assert "t&lt;script&gt;" in definitions and "#60;b#62;end#60;/b#62;" in definitions
        letters = client.get("/ui/dead-letters").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in letters and "not JSON: &lt;b&gt;bad&lt;/b&gt;" in letters
        assert "<script>alert" not in letters and "<b>bad" not in letters


def test_instances_filter_by_status_definition_and_key_newest_first_in_pages(source: Source) -> None:
    made = add_instances(source, 60)
    add_instances(source, 2, status="failed", tokens=(), correlation_key="hp-x")
    with console(source, None) as client:
        first = client.get("/ui/instances", params={"definition": "temperature-control", "status": "running"}).text
        ids = [i.id[:8] for i in reversed(made)]
        assert first.count('href="/ui/instances/') == 50
        assert first.index(ids[0]) < first.index(ids[1]) < first.index(ids[49]) and ids[50] not in first
        assert 'rel="next" href="/ui/instances?status=running&amp;definition=temperature-control&amp;page=2"' in first
        second = client.get("/ui/instances", params={"definition": "temperature-control", "status": "running", "page": "2"}).text
        assert second.count('href="/ui/instances/') == 10 and ids[59] in second and 'rel="next"' not in second and 'rel="prev"' in second
        keyed = client.get("/ui/instances", params={"key": "hp-1"}).text
        assert keyed.count('href="/ui/instances/') == 20 and made[1].id[:8] in keyed and made[0].id[:8] not in keyed
        failed = client.get("/ui/instances", params={"status": "failed"}).text
        assert failed.count('href="/ui/instances/') == 2 and "hp-x" in failed
        assert client.get("/ui/instances", params={"status": "sleeping"}).status_code == 400
        assert client.get("/ui/instances", params={"page": "0"}).status_code == 400
        unknown = client.get(f"/ui/instances/{uuid.uuid4()}")
        assert unknown.status_code == 404 and "No such instance" in unknown.text
        assert client.get("/ui/definitions/nothing").status_code == 404
        assert client.get("/ui/definitions/hostile?version=9").status_code == 404
        assert client.get("/ui/nowhere").status_code == 404


def test_a_trace_id_links_to_the_trace_viewer_and_back_to_the_instances_of_its_trace(source: Source) -> None:
    trace_id = uuid.uuid4().hex
    [traced] = add_instances(source, 1, trace=f"00-{trace_id}-00f067aa0ba902b7-01;vendor=1")
    [untraced] = add_instances(source, 1)
    source.store.commit([Step(traced, 1, (RecordHistory("start", "started", T0),))])
    jaeger = "http://localhost:16686/trace/{trace_id}"
    with console(source, None, jaeger) as client:
        page = client.get(f"/ui/instances/{traced.id}").text
        assert f'id="trace-link" href="http://localhost:16686/trace/{trace_id}"' in page
        assert 'rel="noopener noreferrer"' in page
        assert f'href="/ui/instances?trace={trace_id}"' in page
        back = client.get("/ui/instances", params={"trace": trace_id.upper()}).text
        assert back.count('href="/ui/instances/') == 1 and traced.id[:8] in back and untraced.id[:8] not in back
        assert client.get("/ui/instances", params={"trace": "<script>"}).status_code == 400
        assert 'id="trace-id"' not in client.get(f"/ui/instances/{untraced.id}").text
    with console(source, None) as client:  # no TRACE_UI_URL: the id is shown, not linked
        page = client.get(f"/ui/instances/{traced.id}").text
        assert '<code id="trace-id"' in page and 'id="trace-link"' not in page
