"""What every request passes before an endpoint, and how errors leave without leaking.

- With a token, every route but the probes and metrics needs `Authorization: Bearer`
  (reads too: history holds telemetry and action payloads); compared in constant time.
- Without one the API is read-only: mutating calls answer 403 naming the setting.
- Mutating calls take `Content-Type: application/json` only, so no web page can post
  a form across sites, and bodies up to MAX_BODY_BYTES, counted while they are read.
- An unexpected error is a generic 500 with an incident id; its text stays in the log.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("process_engine.http")

TOKEN_SETTING = "PROCESS_ENGINE_API_TOKEN"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY_BYTES = 1024 * 1024
READ_ONLY = (
    f"the API is read-only because {TOKEN_SETTING} is not set: set it to a secret and send "
    f"Authorization: Bearer <{TOKEN_SETTING}> to start and control instances"
)


class BodyTooLarge(Exception):
    """A request body went past MAX_BODY_BYTES while it was read."""


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error response: `{"error": "..."}` naming the thing and the fix."""
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def too_large() -> JSONResponse:
    """413 naming the limit."""
    return error(413, f"the body is over {MAX_BODY_BYTES // 1024} KiB: send a smaller JSON document")


def internal_error(what: str, problem: BaseException) -> JSONResponse:
    """A 500 that names an incident id; the error's text and traceback go to the log only."""
    incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s): %s: %s", what, incident, type(problem).__name__, problem, exc_info=problem)
    return error(500, f"internal error (incident {incident}): the engine log has the details; retry, or report the incident id")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read chunk by chunk; BodyTooLarge as soon as it passes `limit` (the rest is never kept)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge()
    return bytes(body)


class RequestGuard:
    """ASGI middleware applying the rules of the module docstring."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode("utf-8") if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as problem:
            if started:
                raise  # half a response is out: the server has to drop the connection
            await internal_error(f"{scope['method']} {scope['path']}", problem)(scope, receive, send)

    def refusal(self, scope: Scope) -> JSONResponse | None:
        """The answer to a request that may not reach its endpoint, or None."""
        if scope["path"] in OPEN_PATHS:
            return None
        headers = Headers(scope=scope)
        if self.token is not None and not self.authorized(headers):
            return error(401, f"missing or wrong bearer token: send Authorization: Bearer <{TOKEN_SETTING}>", {"WWW-Authenticate": "Bearer"})
        if scope["method"] in READ_METHODS:
            return None
        if self.token is None:
            return error(403, READ_ONLY)
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            shown = f"got {media_type!r}" if media_type else "got none"
            return error(415, f"mutating calls take Content-Type: application/json only ({shown}); send a JSON body such as {{}}")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return too_large()
        return None

    def authorized(self, headers: Headers) -> bool:
        """True when the request carries the token as a bearer token (compared in constant time)."""
        assert self.token is not None
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Header text is latin-1 as it came over the wire: back to those bytes, then compare.
        return hmac.compare_digest(credentials.strip().encode("latin-1"), self.token)


__all__ = ["MAX_BODY_BYTES", "BodyTooLarge", "RequestGuard", "error", "internal_error", "read_body"]
