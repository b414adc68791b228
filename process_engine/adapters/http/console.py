"""The web console at /ui: definitions as graphs, instances, each instance's trace, dead letters.

Server-rendered pages (Jinja2, autoescaped) over the same store and registry the API
reads. The console sits in front of the API's own routes (`with_console`), so its
sign-in cookie, not the API's bearer header, guards its pages; its buttons call the
JSON API with the bearer token. Only files of this server are loaded (see CSP): the
graphs are drawn by the vendored Mermaid in static/, started by static/console.js.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from process_engine.adapters.http.console_session import TOKEN_SETTING, ConsoleSession, form_fields, local_target
from process_engine.adapters.http.console_views import (
    CONTROLS_BY_STATUS,
    dead_letter_view,
    definition_view,
    instance_row,
    pretty,
)
from process_engine.adapters.http.flowchart import flowchart
from process_engine.adapters.http.trace import redacted, trace_path, trace_steps
from process_engine.domain.errors import DefinitionError, StoreError, StoreUnavailable
from process_engine.domain.instance import STATUSES
from process_engine.ports import InstanceQuery, InstanceStore
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.runtime.trace_context import TRACE_ID
from process_engine.runtime.trace_context import trace_id as stored_trace_id

log = logging.getLogger("process_engine.http")
PREFIX = "/ui"
STATIC = Path(__file__).resolve().parent / "static"
PAGE_SIZE = 50
DEAD_LETTERS_SHOWN = 200
VISITS_WINDOW = timedelta(hours=24)
# Scripts, styles, images and fetches from this server only. Mermaid writes a <style>
# into each drawing and style attributes on its shapes, hence 'unsafe-inline' for styles
# (never for scripts).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class DefinitionSource(Protocol):
    """The watched definitions folder, as far as the console reads it."""

    def errors(self) -> list[DefinitionError]:
        """The load errors of files that are broken right now."""


class ConsoleSource(Protocol):
    """What the console reads (the Engine of app.py provides it, as for the API)."""

    store: InstanceStore
    registry: DefinitionRegistry
    folder: DefinitionSource


def _templates() -> Environment:
    environment = Environment(loader=PackageLoader("process_engine.adapters.http", "templates"), autoescape=True, undefined=StrictUndefined)
    environment.filters["pretty"] = pretty
    environment.filters["when"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(moment, datetime) else "\u2014"
    return environment


class Console:
    """The pages, bound to one engine and one sign-in rule."""

    def __init__(
        self, source: ConsoleSource, token: str | None, clock: Callable[[], datetime] | None = None, trace_url: str | None = None,
    ):
        self.source = source
        self.trace_url = trace_url
        self.session = ConsoleSession(token)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.templates = _templates()

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A rendered page; every page knows whether a sign-in is in force."""
        html = self.templates.get_template(template).render(
            path=request.url.path, session_required=self.session.required, token_setting=TOKEN_SETTING, **context
        )
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    # -- pages ---------------------------------------------------------------------
    def definitions(self, request: Request) -> Response:
        """Every active definition: trigger, versions, and its graph with 24-hour visits."""
        registry, store = self.source.registry, self.source.store
        visits = store.activity_visits(self.clock() - VISITS_WINDOW)
        cards = [definition_view(d, visits, store.definition_versions(d.id), d.version) for d in sorted(registry.active(), key=lambda d: d.id)]
        errors = self.source.folder.errors()
        return self.page(request, "definitions.html", cards=cards, errors=errors, single=False)

    def definition(self, request: Request) -> Response:
        """One definition, the active version or `?version=N`."""
        definition_id = request.path_params["definition_id"]
        registry, store = self.source.registry, self.source.store
        active = registry.current(definition_id)
        version_text = request.query_params.get("version", "")
        try:
            definition = registry.get(definition_id, int(version_text)) if version_text else active
        except (KeyError, ValueError):
            definition = None
        if definition is None:
            return self.page(request, "error.html", 404, title="No such definition", problem=f"no definition '{definition_id}' {('version ' + version_text) if version_text else 'is active'}")
        visits = store.activity_visits(self.clock() - VISITS_WINDOW)
        card = definition_view(definition, visits, store.definition_versions(definition_id), active.version if active else None)
        return self.page(request, "definitions.html", cards=[card], errors=[], single=True)

    def instances(self, request: Request) -> Response:
        """Instances newest first, filtered by status, definition, key and trace id, PAGE_SIZE a page."""
        params = request.query_params
        status, definition_id, key = params.get("status") or None, params.get("definition") or None, params.get("key") or None
        trace = (params.get("trace") or "").strip().lower() or None
        page_text = params.get("page") or "1"
        if (status is not None and status not in STATUSES) or not page_text.isdigit() or int(page_text) < 1:
            return self.page(request, "error.html", 400, title="Bad filter", problem=f"status must be one of {', '.join(STATUSES)} and page a whole number from 1")
        if trace is not None and not TRACE_ID.fullmatch(trace):
            return self.page(request, "error.html", 400, title="Bad filter", problem="a trace id is 32 hexadecimal digits, as Jaeger shows it")
        page = int(page_text)
        extra = {name: value for name, value in (("correlation_key", key), ("trace_id", trace)) if value}
        query = InstanceQuery(status=status, definition_id=definition_id, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE, extra=extra)
        found = self.source.store.find_instances(query)
        filters = {"status": status or "", "definition": definition_id or "", "key": key or "", "trace": trace or ""}
        definitions = sorted(d.id for d in self.source.registry.active())
        rows = [instance_row(i) for i in found[:PAGE_SIZE]]
        return self.page(
            request, "instances.html", rows=rows, filters=filters, statuses=STATUSES, definitions=definitions,
            page=page, more=len(found) > PAGE_SIZE, query_for=lambda p: _query({**filters, "page": str(p)}),
        )

    def instance(self, request: Request) -> Response:
        """One instance's trace: the graph with its path, then every step in time order."""
        instance_id = request.path_params["instance_id"]
        store = self.source.store
        instance = store.load(instance_id)
        if instance is None:
            return self.page(request, "error.html", 404, title="No such instance", problem=f"no instance '{instance_id}'")
        history = store.history(instance.id)
        try:
            definition = self.source.registry.get(instance.definition_id, instance.definition_version)
        except KeyError:
            definition = None
        highlight = trace_path(definition, instance, history)
        trace_id = stored_trace_id(instance.trace)
        return self.page(
            request, "trace.html", instance=instance, row=instance_row(instance), steps=trace_steps(definition, history),
            chart=flowchart(definition, highlight=highlight) if definition is not None else None,
            timers=store.pending_timers(instance.id), now=self.clock(), variables=redacted(instance.variables),
            controls=CONTROLS_BY_STATUS.get(instance.status, ()) if self.session.required else (),
            trace_id=trace_id, trace_link=self.trace_url.replace("{trace_id}", trace_id) if self.trace_url and trace_id else None,
        )

    def dead_letters(self, request: Request) -> Response:
        """The newest dead-lettered messages with their reason and payload."""
        letters = [dead_letter_view(letter) for letter in self.source.store.dead_letters(limit=DEAD_LETTERS_SHOWN)]
        return self.page(request, "dead_letters.html", letters=letters, shown=DEAD_LETTERS_SHOWN)

    # -- sign-in -------------------------------------------------------------------
    def login_form(self, request: Request) -> Response:
        """The token form (or, without a token, straight to the console)."""
        if not self.session.required:
            return RedirectResponse(PREFIX, status_code=303)
        return self.page(request, "login.html", next=local_target(request.query_params.get("next")), problem=None)

    async def login(self, request: Request) -> Response:
        """Check the token from the form; on success set the cookie and go where the user was going."""
        if not self.session.required:
            return RedirectResponse(PREFIX, status_code=303)
        fields = await form_fields(request)
        target = local_target((fields or {}).get("next"))
        if fields is None or not self.session.accepts(fields.get("token", "")):
            log.warning("console sign-in refused from %s", request.client.host if request.client else "?")
            return self.page(request, "login.html", 401, next=target, problem=f"That is not the {TOKEN_SETTING} this engine runs with.")
        response = RedirectResponse(target, status_code=303)
        self.session.remember(response, request)
        return response

    def logout(self, request: Request) -> Response:
        """Forget the sign-in."""
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        self.session.forget(response)
        return response

    def session_token(self, request: Request) -> Response:
        """The bearer token for the console's buttons, to a signed-in page of this site only."""
        if not self.session.required:
            return JSONResponse({"error": f"the API is read-only: {TOKEN_SETTING} is not set"}, status_code=403)
        return JSONResponse({"token": self.session.token}, headers={"cache-control": "no-store"})

    def signed_in(self, endpoint: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """`endpoint`, or the sign-in form when a token is set and the request has no sign-in."""

        def checked(request: Request) -> Any:
            if self.session.signed_in(request):
                return endpoint(request)
            if request.url.path.startswith(f"{PREFIX}/session"):
                return JSONResponse({"error": "sign in to the console first"}, status_code=401)
            return RedirectResponse(f"{PREFIX}/login?{_query({'next': request.url.path + _suffix(request)})}", status_code=303)

        return checked


def _query(values: dict[str, str]) -> str:
    return urlencode({k: v for k, v in values.items() if v})


def _suffix(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


def console_app(source: ConsoleSource, token: str | None, trace_url: str | None = None) -> ASGIApp:
    """The console's ASGI app, answering paths under /ui.

    Args:
        source: the engine (store, registry, folder).
        token: PROCESS_ENGINE_API_TOKEN; when set, pages need a sign-in and the controls show.
        trace_url: TRACE_UI_URL; when set, a trace id links to it (Jaeger, Tempo), `{trace_id}` replaced.
    """
    console = Console(source, token, trace_url=trace_url)
    guard = console.signed_in
    routes = [
        Route(PREFIX, guard(console.definitions), methods=["GET"]),
        Route(f"{PREFIX}/", guard(console.definitions), methods=["GET"]),
        Route(f"{PREFIX}/definitions/{{definition_id}}", guard(console.definition), methods=["GET"]),
        Route(f"{PREFIX}/instances", guard(console.instances), methods=["GET"]),
        Route(f"{PREFIX}/instances/{{instance_id}}", guard(console.instance), methods=["GET"]),
        Route(f"{PREFIX}/dead-letters", guard(console.dead_letters), methods=["GET"]),
        Route(f"{PREFIX}/session/token", guard(console.session_token), methods=["GET"]),
        Route(f"{PREFIX}/login", console.login_form, methods=["GET"]),
        Route(f"{PREFIX}/login", console.login, methods=["POST"]),
        Route(f"{PREFIX}/logout", console.logout, methods=["POST"]),
        Mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="static"),
    ]

    def failed(request: Request, problem: Exception) -> Response:
        if isinstance(problem, StoreUnavailable):
            log.warning("console %s: the database is unavailable: %s", request.url.path, problem)
            return console.page(request, "error.html", 503, title="Database unavailable", problem="the database is unavailable: check DATABASE_URL and that PostgreSQL runs, then reload")
        log.error("console %s failed: %s", request.url.path, problem, exc_info=problem)
        return console.page(request, "error.html", 500, title="Internal error", problem="reading the database failed; the engine log has the details")

    def http_error(request: Request, problem: Exception) -> Response:
        status = problem.status_code if isinstance(problem, HTTPException) else 500
        return console.page(request, "error.html", status, title="Not here", problem=f"nothing at {request.url.path}: see the Definitions, Instances and Dead letters pages")

    app = Starlette(routes=routes, exception_handlers={StoreError: failed, HTTPException: http_error})
    return SecurityHeaders(app)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every console response (pages and static files)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
            await send(message)

        await self.app(scope, receive, with_headers)


def with_console(api: ASGIApp, source: ConsoleSource, token: str | None, trace_url: str | None = None) -> ASGIApp:
    """`api` with the console answering /ui and everything under it, ahead of the API's own rules."""
    console = console_app(source, token, trace_url)

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        target = console if path == PREFIX or path.startswith(f"{PREFIX}/") else api
        await target(scope, receive, send)

    return route


__all__ = ["Console", "ConsoleSource", "console_app", "with_console"]
