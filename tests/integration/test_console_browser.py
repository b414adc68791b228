"""The web console in a real browser (headless Chromium) over a real engine run.

The engine consumes telemetry from the fixture broker, persists to the fixture
PostgreSQL and publishes to the fixture MQTT broker; the tests open each page and
assert what a person sees there. Screenshots go to the test's tmp dir
(docs/console-trace.png is the trace screenshot of the first test).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from process_engine.adapters.http.api import create_app
from process_engine.adapters.http.server import HttpServer
from process_engine.app import Engine
from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.browser import browser_page, chromium  # noqa: F401  (fixtures)
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import engine_settings, running_engine, seed_copy, telemetry, unique

pytestmark = pytest.mark.integration
TOKEN = "console-browser-token"
# Waits an hour on a timer: stays running, so it can be suspended, resumed and cancelled.
HOLD = """
id: hold
name: Hold for an hour
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: wait_an_hour, type: timer, duration: 1h}
  - {id: end, type: end}
"""
HOSTILE = """
id: hostile
name: "<img src=x onerror=alert(1)>"
trigger: {type: api}
activities:
  - {id: start, type: start}
  - {id: "x\\"]; click a0 call alert(2); a9[\\"<img src=y onerror=alert(3)>", type: end}
"""


@contextmanager
def console_server(engine: Engine, token: str | None) -> Iterator[str]:
    """The engine's HTTP app (API and console) on an ephemeral port; yields its base URL."""
    server = HttpServer(create_app(engine, token), "127.0.0.1", 0).start()
    try:
        yield server.url
    finally:
        server.stop()


def open_page(page: Any, url: str, shots: Path, name: str, graphs: bool = False) -> None:
    """Go to `url`, wait for its graphs to be drawn when it has some, and save a screenshot."""
    page.goto(url)
    if graphs:
        expect(page.locator("body")).to_have_attribute("data-graphs", "drawn")
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def node(page: Any, activity_id: str) -> Any:
    """The drawn node of an activity (its label starts with the id, in bold)."""
    return page.locator("svg g.node").filter(has=page.locator("b", has_text=re.compile(f"^{re.escape(activity_id)}$")))


def fill_of(locator: Any) -> str:
    """The fill colour the browser paints a node's shape with."""
    return locator.locator("rect, polygon, path").first.evaluate("shape => getComputedStyle(shape).fill")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def test_a_person_finds_out_why_an_instance_escalated(
    database_url: str, kafka_bootstrap: str, mqtt_url: str, browser_page: Any, tmp_path: Path, shots: Path
) -> None:
    topic = unique("heatpump")
    folder = tmp_path / "processes"
    folder.mkdir()
    seed_copy(folder, topic, timer="4s", correlate="tags.device_id")
    create_topic(kafka_bootstrap, topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, folder, unique("g"))
    with running_engine(settings) as engine, console_server(engine, None) as url:
        # hp-1 runs hot and still reads 26.0 when rechecked: it escalates. hp-2 is cool: nothing starts.
        produce_json(kafka_bootstrap, topic, [telemetry("hp-1", 27.5), telemetry("hp-1", 26.0), telemetry("hp-2", 20.0), "not json {"])
        [escalated] = wait_until(
            lambda: [i for i in engine.store.find_instances(InstanceQuery()) if i.status == "completed"], 40, "the instance to complete"
        )
        wait_until(lambda: engine.store.dead_letters(), 20, "the dead letter of the message that is not JSON")
        page = browser_page

        open_page(page, f"{url}/ui", shots, "definitions", graphs=True)
        card = page.locator("#definition-temperature-control")
        expect(card.locator("table.trigger")).to_contain_text(topic)
        expect(card.locator("table.trigger")).to_contain_text("tags.device_id")
        expect(card.locator("table.versions")).to_contain_text("v1")
        expect(node(page, "check_temp")).to_contain_text("1 instance in 24 h")
        expect(node(page, "escalate")).to_contain_text("1 instance in 24 h")
        expect(node(page, "log_success")).to_contain_text("0 instances in 24 h")
        expect(card.locator("svg g.edgeLabel", has_text="false")).to_have_count(2)

        open_page(page, f"{url}/ui/instances?key=hp-1", shots, "instances")
        rows = page.locator("table.instances tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("completed")
        page.select_option("select[name=status]", "completed")
        page.fill("input[name=key]", "")
        page.click("form.filters button[type=submit]")
        expect(rows).to_have_count(1)
        expect(page.locator("select[name=status]")).to_have_value("completed")

        rows.filter(has_text="hp-1").locator("a").click()
        expect(page.locator("body")).to_have_attribute("data-graphs", "drawn")
        page.screenshot(path=str(shots / "trace.png"), full_page=True)
        assert page.url.endswith(f"/ui/instances/{escalated.id}")
        # The path taken is highlighted: painted green, the branch not taken grey.
        for visited in ("start", "check_temp", "activate_cooling", "wait_recheck", "recheck_temp", "escalate", "end"):
            expect(node(page, visited)).to_have_class(re.compile(r"\bvisited\b"))
        expect(node(page, "log_success")).to_have_class(re.compile(r"\bunvisited\b"))
        assert fill_of(node(page, "escalate")) == "rgb(215, 240, 216)"
        assert fill_of(node(page, "log_success")) == "rgb(246, 246, 246)"
        # Why it escalated: the recheck read 26.0 against a threshold of 25.0.
        recheck = page.locator("li.step[data-activity=recheck_temp]")
        expect(recheck.locator(".title")).to_have_text("Decision recheck_temp: False \u2192 escalate")
        expect(recheck.locator("table.read tr", has_text="temperature")).to_contain_text("26.0")
        expect(recheck.locator("table.read tr", has_text="threshold")).to_contain_text("25.0")
        changed = page.locator("li.step[data-event=variable_changed]")
        expect(changed).to_contain_text("27.5")
        expect(changed).to_contain_text("26.0")
        notify = page.locator("li.step[data-activity=escalate][data-event=action_requested]")
        expect(notify.locator("details.config pre")).to_contain_text("Temperature still high after cooling")
        expect(page.locator("li.step[data-activity=wait_recheck]", has_text="Timer wait_recheck fired")).to_have_count(1)
        expect(page.locator("li.step[data-activity=wait_recheck]", has_text="Timer wait_recheck due at")).to_have_count(1)
        expect(page.locator("#controls")).to_have_count(0)  # no token: read-only

        open_page(page, f"{url}/ui/dead-letters", shots, "dead-letters")
        letter = page.locator("section.dead-letter").first
        expect(letter.locator(".reason")).to_contain_text("not JSON")
        expect(letter).to_contain_text(topic)
        expect(letter.locator("pre.payload")).to_have_text("not json {")
        assert page.problems == []


def test_with_a_token_the_console_asks_once_and_its_buttons_call_the_api(
    database_url: str, kafka_bootstrap: str, mqtt_url: str, browser_page: Any, tmp_path: Path, shots: Path
) -> None:
    (tmp_path / "hold.yaml").write_text(HOLD, encoding="utf-8")
    (tmp_path / "hostile.yaml").write_text(HOSTILE, encoding="utf-8")
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, f"g-{uuid.uuid4().hex[:8]}")
    with running_engine(settings) as engine, console_server(engine, TOKEN) as url:
        instance = engine.dispatcher.start("hold", {}, "test")
        page = browser_page
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))

        open_page(page, f"{url}/ui/instances/{instance.id}", shots, "login")
        expect(page.locator("h1")).to_have_text("Sign in")
        page.fill("input[name=token]", "not the token")
        page.click("form button[type=submit]")
        expect(page.locator("p.problem")).to_contain_text("That is not the PROCESS_ENGINE_API_TOKEN")
        page.problems.clear()  # the browser logs the refusal's 401
        page.fill("input[name=token]", TOKEN)
        page.click("form button[type=submit]")
        expect(page.locator("body")).to_have_attribute("data-graphs", "drawn")
        assert page.url.endswith(f"/ui/instances/{instance.id}")
        expect(node(page, "wait_an_hour")).to_have_class(re.compile(r"\bcurrent\b"))
        expect(page.locator("table.timers")).to_contain_text("wait_an_hour")
        page.screenshot(path=str(shots / "controls.png"), full_page=True)

        page.click("button[data-action=suspend]")
        expect(page.locator("#instance-status")).to_have_text("suspended")
        assert wait_until(lambda: engine.store.load(instance.id).status == "suspended", 10, "the suspension in the database")
        page.click("button[data-action=resume]")
        expect(page.locator("#instance-status")).to_have_text("running")
        page.click("button[data-action=cancel]")
        expect(page.locator("#instance-status")).to_have_text("cancelled")
        expect(page.locator("#controls")).to_have_count(0)
        assert engine.store.load(instance.id).status == "cancelled"
        assert [d for d in dialogs if d.startswith("Cancel this instance?")] == [dialogs[0]]

        # Asked once: other pages of the session open without the form.
        open_page(page, f"{url}/ui", shots, "definitions-signed-in", graphs=True)
        hostile = page.locator("#definition-hostile")
        expect(hostile.locator("h2")).to_contain_text("<img src=x onerror=alert(1)>")
        expect(node(page, 'x"]; click a0 call alert(2); a9["<img src=y onerror=alert(3)>')).to_have_count(1)
        assert page.locator("svg img, main img").count() == 0
        assert dialogs == [dialogs[0]] and page.problems == []

        page.click("header form button")  # sign out
        expect(page.locator("h1")).to_have_text("Sign in")
