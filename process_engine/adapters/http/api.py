"""The HTTP control plane (Starlette): health, metrics, definitions, instances and their controls.

Blocking store calls run in Starlette's threadpool: read endpoints are plain functions
(Starlette runs those in the pool), write endpoints read the body and then hand the
work to `run_in_threadpool`. Access rules live in `guard`.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from process_engine.adapters.http.console import with_console
from process_engine.adapters.http.guard import READ_ONLY, BodyTooLarge, RequestGuard, error, internal_error, read_body, too_large
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.errors import DefinitionError, StoreError, StoreUnavailable
from process_engine.domain.instance import STATUSES, InstanceState
from process_engine.engine.events import Cancel, Event, Resume, Retry, Suspend
from process_engine.ports import HistoryRecord, InstanceQuery, InstanceStore
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry
from process_engine.runtime.trace_context import TRACE_ID
from process_engine.runtime.trace_context import trace_id as stored_trace_id

log = logging.getLogger("process_engine.http")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class DefinitionSource(Protocol):
    """The watched definitions folder, as far as the API reads it."""

    def errors(self) -> list[DefinitionError]:
        """The load errors of files that are broken right now."""


class MetricsSource(Protocol):
    """The engine's metrics, as far as the API serves them."""

    content_type: str

    def exposition(self) -> bytes:
        """The metrics in the exposition format of `content_type`."""


class ControlPlane(Protocol):
    """What the HTTP API needs from the engine (the Engine of app.py provides it)."""

    store: InstanceStore
    registry: DefinitionRegistry
    folder: DefinitionSource
    dispatcher: Dispatcher
    metrics: MetricsSource

    def alive(self) -> tuple[bool, str]:
        """Whether every worker thread runs, and why not."""

    def readiness(self) -> dict[str, dict[str, Any]]:
        """Each dependency's check: {"database": {"ok": True, ...}, ...}."""


# Control actions: the event, the statuses it applies to, and what it needs to become.
CONTROLS: dict[str, tuple[Callable[[], Event], tuple[str, ...]]] = {
    "cancel": (lambda: Cancel("cancelled through the HTTP API"), ("running", "suspended")),
    "suspend": (lambda: Suspend("suspended through the HTTP API"), ("running",)),
    "resume": (Resume, ("suspended",)),
    "retry": (Retry, ("failed",)),
}


def instance_json(instance: InstanceState) -> dict[str, Any]:
    """An instance as the API shows it."""
    return {
        "id": instance.id,
        "definition_id": instance.definition_id,
        "definition_version": instance.definition_version,
        "status": instance.status,
        "current_activity": instance.current_activity,
        "variables": instance.variables,
        "correlation_key": instance.correlation_key,
        "started_at": _iso(instance.started_at),
        "completed_at": _iso(instance.completed_at),
        "error": instance.error,
        "trace_id": stored_trace_id(instance.trace),
        "tokens": [{"id": t.id, "activity_id": t.activity_id, "waiting": t.waiting, "attempt": t.attempt} for t in instance.tokens],
    }


def history_json(record: HistoryRecord) -> dict[str, Any]:
    """One history row as the API shows it."""
    return {
        "event_id": record.event_id,
        "activity_id": record.activity_id,
        "event_type": record.event_type,
        "timestamp": _iso(record.timestamp),
        "data": record.data,
        "message": record.message,
        "correlation_id": record.correlation_id,
        "causation_id": record.causation_id,
        "trace_id": record.trace_id,
    }


def definition_json(definition: ProcessDefinition) -> dict[str, Any]:
    """An active definition as the API shows it."""
    trigger = definition.trigger
    return {
        "id": definition.id,
        "version": definition.version,
        "name": definition.name,
        "trigger": {"type": trigger.type, "topic": trigger.topic, "cron": trigger.cron, "mode": trigger.mode},
        "file": definition.source_file,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


class HttpApi:
    """The endpoints, bound to one engine."""

    def __init__(self, engine: ControlPlane):
        self.engine = engine

    # -- probes and metrics -----------------------------------------------------
    def healthz(self, request: Request) -> Response:
        """Liveness: 200 while every worker thread of the process runs."""
        alive, reason = self.engine.alive()
        return JSONResponse({"status": "ok" if alive else reason}, status_code=200 if alive else 503)

    def readyz(self, request: Request) -> Response:
        """Readiness: 200 only when the database, the broker and MQTT answer."""
        checks = self.engine.readiness()
        ready = all(check["ok"] for check in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    def metrics(self, request: Request) -> Response:
        """Prometheus text format."""
        return Response(self.engine.metrics.exposition(), media_type=self.engine.metrics.content_type)

    # -- reads --------------------------------------------------------------------
    def definitions(self, request: Request) -> Response:
        """Active definitions, and the load errors of files that are broken right now."""
        active = sorted(self.engine.registry.active(), key=lambda d: d.id)
        errors = [{"file": e.file, "line": e.line, "reason": e.reason} for e in self.engine.folder.errors()]
        return JSONResponse({"definitions": [definition_json(d) for d in active], "errors": errors})

    def instances(self, request: Request) -> Response:
        """Instances, newest first, filtered by `status`, `definition` and `trace_id`."""
        params = request.query_params
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            return error(400, f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        limit_text = params.get("limit") or str(DEFAULT_LIMIT)
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            return error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit_text!r}")
        trace_id = (params.get("trace_id") or "").strip().lower() or None
        if trace_id is not None and not TRACE_ID.fullmatch(trace_id):
            return error(400, f"trace_id must be 32 hexadecimal digits (a W3C trace id, as Jaeger shows it), got {trace_id[:64]!r}")
        query = InstanceQuery(
            status=status, definition_id=params.get("definition") or None, limit=int(limit_text),
            extra={"trace_id": trace_id} if trace_id else {},
        )
        found = self.engine.store.find_instances(query)
        return JSONResponse({"instances": [instance_json(i) for i in found]})

    def instance(self, request: Request) -> Response:
        """One instance with its history, oldest event first."""
        instance_id = request.path_params["instance_id"]
        instance = self.engine.store.load(instance_id)
        if instance is None:
            return _unknown_instance(instance_id)
        history = self.engine.store.history(instance_id)
        return JSONResponse({**instance_json(instance), "history": [history_json(r) for r in history]})

    # -- writes -------------------------------------------------------------------
    async def start(self, request: Request) -> Response:
        """Start an instance of an active definition: body `{"variables": {...}}` (optional)."""
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        unknown = sorted(set(body) - {"variables"})
        variables = body.get("variables", {})
        if unknown or not isinstance(variables, dict):
            return error(400, 'the body must be {"variables": {...}} (a JSON object of variable values)')
        definition_id = request.path_params["definition_id"]
        definition = self.engine.registry.current(definition_id)
        if definition is None:
            return _unknown_definition(definition_id)
        problem = variables_problem(definition, variables)
        if problem:
            return error(400, problem)
        try:
            instance = await run_in_threadpool(self.engine.dispatcher.start, definition_id, variables, "http")
        except KeyError:  # unloaded in the meantime
            return _unknown_definition(definition_id)
        stored = await run_in_threadpool(self.engine.store.load, instance.id)
        return JSONResponse(instance_json(stored or instance), status_code=201)

    async def control(self, request: Request) -> Response:
        """cancel, suspend, resume or retry one instance; 409 when the action does not apply."""
        instance_id, action = request.path_params["instance_id"], request.path_params["action"]
        if action not in CONTROLS:
            return error(404, f"unknown action '{action}': use one of {', '.join(CONTROLS)}")
        return await run_in_threadpool(self._control, instance_id, action)

    def _control(self, instance_id: str, action: str) -> Response:
        make_event, applies_to = CONTROLS[action]
        before = self.engine.store.load(instance_id)
        if before is None:
            return _unknown_instance(instance_id)
        if before.status not in applies_to:
            return _not_applicable(before, action, applies_to)
        try:
            after = self.engine.dispatcher.control(instance_id, make_event(), cause=f"http:{action}")
        except KeyError:
            return _unknown_instance(instance_id)
        if after == before:  # the walker did nothing: the status changed in the meantime
            current = self.engine.store.load(instance_id) or before
            return _not_applicable(current, action, applies_to)
        stored = self.engine.store.load(instance_id)
        return JSONResponse(instance_json(stored or after))


def variables_problem(definition: ProcessDefinition, variables: dict[str, Any]) -> str | None:
    """Why an API start may not set these variables: only declared ones without a static `value`.

    A static value is the definition's own constant (a URL, a topic): letting a caller
    replace it would let them point the definition's actions anywhere.
    """
    settable = sorted(v.name for v in definition.variables if v.source is not None)
    static = {v.name for v in definition.variables if v.source is None}
    allowed = f"the API may set {', '.join(settable) or 'none of its variables'}"
    for name in sorted(variables):
        if name in static:
            return f"variable '{name}' of definition '{definition.id}' has a static value and cannot be set through the API; {allowed}"
        if name not in settable:
            close = difflib.get_close_matches(name, settable, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return f"unknown variable '{name}' for definition '{definition.id}'{hint}; {allowed}"
        unstorable = _unstorable(variables[name])
        if unstorable:
            return f"variable '{name}' contains {unstorable}, which PostgreSQL cannot store: remove it"
    return None


def _unstorable(value: Any) -> str | None:
    """What in a JSON value's strings PostgreSQL refuses (walked without recursion: JSON nests deep)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "a NUL character (\\u0000)"
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return "a lone surrogate (\\ud800-\\udfff without its pair)"
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _unknown_definition(definition_id: str) -> Response:
    return error(404, f"no active definition '{definition_id}': GET /definitions lists them")


def _unknown_instance(instance_id: str) -> Response:
    return error(404, f"no instance '{instance_id}': GET /instances lists them")


def _not_applicable(instance: InstanceState, action: str, applies_to: tuple[str, ...]) -> Response:
    return error(409, f"cannot {action} instance {instance.id}: it is {instance.status}; {action} applies to {' or '.join(applies_to)} instances")


async def _json_body(request: Request) -> dict[str, Any] | Response:
    try:
        raw = await read_body(request)
    except BodyTooLarge:
        return too_large()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        return error(400, 'the body nests too deep to be read; send {"variables": {...}} with flatter values')
    except (ValueError, UnicodeDecodeError) as problem:
        return error(400, f"the body is not JSON ({problem}); send {{\"variables\": {{...}}}}")
    if not isinstance(body, dict):
        return error(400, 'the body must be a JSON object: {"variables": {...}}')
    return body


async def _http_error(request: Request, problem: Exception) -> Response:
    assert isinstance(problem, HTTPException)
    message = {404: f"no endpoint {request.url.path}: see GET /definitions and GET /instances", 405: f"{request.method} is not allowed on {request.url.path}"}
    return error(problem.status_code, message.get(problem.status_code, str(problem.detail)), problem.headers)


async def _store_error(request: Request, problem: Exception) -> Response:
    # The database's own words (and what it was sent) stay in the log.
    if isinstance(problem, StoreUnavailable):
        log.warning("%s %s: the database is unavailable: %s", request.method, request.url.path, problem)
        return error(503, "the database is unavailable: check DATABASE_URL and that PostgreSQL runs, then retry")
    return internal_error(f"{request.method} {request.url.path}", problem)


def create_app(engine: ControlPlane, api_token: str | None, trace_url: str | None = None) -> ASGIApp:
    """The ASGI app of the control plane.

    Args:
        engine: the running engine (or anything with the ControlPlane attributes).
        api_token: when set, every route but /healthz, /readyz and /metrics needs
            `Authorization: Bearer <api_token>`; when None, the API is read-only (and says so in the log).
        trace_url: TRACE_UI_URL, where the console links a trace id (`{trace_id}` in it).
    """
    if not api_token:
        log.warning("%s", READ_ONLY)
    api = HttpApi(engine)
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/definitions", api.definitions, methods=["GET"]),
        Route("/definitions/{definition_id}/instances", api.start, methods=["POST"]),
        Route("/instances", api.instances, methods=["GET"]),
        Route("/instances/{instance_id}", api.instance, methods=["GET"]),
        Route("/instances/{instance_id}/{action}", api.control, methods=["POST"]),
    ]
    handlers = {HTTPException: _http_error, StoreError: _store_error}
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=[Middleware(RequestGuard, token=api_token)])
    return with_console(app, engine, api_token, trace_url)  # /ui: the web console, with its own cookie sign-in


__all__ = ["ControlPlane", "HttpApi", "create_app"]
