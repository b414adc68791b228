"""The console's sign-in: with PROCESS_ENGINE_API_TOKEN set, a form asks for the token once.

The cookie holds an HMAC of the token, not the token: HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it), scoped to /ui. Every comparison is
constant-time. Without a token there is nothing to sign in to: the console is open
and read-only, as the API is.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

TOKEN_SETTING = "PROCESS_ENGINE_API_TOKEN"
COOKIE = "process_engine_console"
COOKIE_PATH = "/ui"
MAX_FORM_BYTES = 16 * 1024
_PURPOSE = b"process-engine console session v1"


class ConsoleSession:
    """Who may see the console, and the cookie that remembers a sign-in."""

    def __init__(self, token: str | None):
        self.token = token or None
        self._proof = hmac.new(self.token.encode("utf-8"), _PURPOSE, hashlib.sha256).hexdigest() if self.token else ""

    @property
    def required(self) -> bool:
        """True when a token is set: pages need a sign-in, and the controls are offered."""
        return self.token is not None

    def signed_in(self, request: Request) -> bool:
        """True without a token, or when the request carries the sign-in cookie."""
        if self.token is None:
            return True
        presented = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self._proof.encode("ascii"))

    def accepts(self, candidate: str) -> bool:
        """True when `candidate` is the token (constant-time)."""
        if self.token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self.token.encode("utf-8"))

    def remember(self, response: Response, request: Request) -> None:
        """Set the sign-in cookie on `response`."""
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE, self._proof, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure)

    def forget(self, response: Response) -> None:
        """Clear the sign-in cookie."""
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


async def form_fields(request: Request) -> dict[str, str] | None:
    """A small urlencoded form's fields (first value of each); None when it is too large or not a form."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in parsed.items()}


def local_target(path: str | None) -> str:
    """Where to go after signing in: a console path, never another site."""
    if path and path.startswith("/ui") and not path.startswith("//") and "\\" not in path:
        return path
    return "/ui"


__all__ = ["COOKIE", "TOKEN_SETTING", "ConsoleSession", "form_fields", "local_target"]
