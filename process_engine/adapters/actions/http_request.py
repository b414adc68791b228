"""The built-in `http` action and the HTTP caller it shares with notify webhooks.

Every request carries the action's idempotency key as `Idempotency-Key` and goes
through the circuit breaker of its origin (`scheme://host:port`). It connects only
to addresses the DestinationPolicy allows (see `destinations`), and redirects are
not followed. Outcomes: 2xx/3xx give `{"status": code, "body": parsed JSON or text}`,
the body cut to 1 KiB (it lands in history; `"truncated": true` says so); 5xx, 408,
429, connection errors and timeouts are retriable ActionErrors; other 4xx and a
refused destination are not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from process_engine.adapters.actions.base import (
    ActionContext,
    config_problems,
    guarded,
    is_template,
    required_text,
)
from process_engine.adapters.actions.circuit_breaker import BreakerBoard
from process_engine.adapters.actions.destinations import CheckedTransport, DestinationPolicy
from process_engine.domain.durations import parse_duration
from process_engine.domain.errors import ActionError

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
RETRIABLE_STATUSES = {408, 425, 429}
MAX_BODY_BYTES = 1024  # results land in history rows: keep them bounded
SNIPPET_CHARS = 200


class HttpCaller:
    """Sends requests for actions: breaker per origin, Idempotency-Key, error mapping."""

    def __init__(self, breakers: BreakerBoard | None = None, destinations: DestinationPolicy | None = None):
        self.breakers = breakers
        self.destinations = destinations if destinations is not None else DestinationPolicy()
        # Redirects are not followed: a 3xx is the outcome (each hop would be checked anyway).
        self._client = httpx.Client(transport=CheckedTransport(self.destinations), follow_redirects=False, trust_env=False)

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Send one request; return `{"status", "body"}`. Errors name `label` (default: method and URL).

        Raises:
            ActionError: retriable for 5xx/408/429, connection errors and timeouts
                (and an open breaker), not retriable for other 4xx and bad input.
        """
        request = self._build(method, url, body, headers, timeout, idempotency_key, (traceparent, tracestate))
        origin = f"{request.url.scheme}://{request.url.host}:{request.url.port or _default_port(request.url.scheme)}"
        return guarded(self.breakers, origin, lambda: self._send(request, label))

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _build(self, method, url, body, headers, timeout, idempotency_key, trace=(None, None)) -> httpx.Request:
        all_headers = {str(name): str(value) for name, value in (headers or {}).items()}
        if idempotency_key is not None:
            all_headers.setdefault("Idempotency-Key", idempotency_key)
        traceparent, tracestate = trace
        if traceparent is not None and not any(name.lower() == "traceparent" for name in all_headers):
            all_headers["traceparent"] = traceparent
            if tracestate is not None:
                all_headers["tracestate"] = tracestate
        content: dict[str, Any] = {}
        if isinstance(body, str | bytes):
            content["content"] = body
        elif body is not None:
            content["content"] = _json_bytes(body)
            all_headers.setdefault("Content-Type", "application/json")
        try:
            request = self._client.build_request(
                method.upper(), url, headers=all_headers, timeout=timeout, **content
            )
        except (httpx.InvalidURL, ValueError, TypeError) as error:
            raise ActionError(f"cannot send {method} {url}: {error}", retriable=False) from None
        if request.url.scheme not in ("http", "https") or not request.url.host:
            raise ActionError(f"cannot send {method} {url}: not an http(s) URL", retriable=False)
        return request

    def _send(self, request: httpx.Request, label: str | None) -> dict[str, Any]:
        where = label or f"{request.method} {request.url}"
        try:
            response = self._client.send(request, stream=True)
            try:
                head, complete = _read_head(response)
            finally:
                response.close()
        except httpx.TimeoutException:
            raise ActionError(f"{where} timed out") from None
        except httpx.TransportError as error:
            raise ActionError(f"{where} failed: {error or type(error).__name__}") from None
        except ActionError as error:  # a refused destination
            raise ActionError(f"{where}: {error}", retriable=error.retriable) from None
        status = response.status_code
        if status >= 500 or status in RETRIABLE_STATUSES:
            raise ActionError(f"{where} answered {status}: {_snippet(head, response)}")
        if status >= 400:
            raise ActionError(f"{where} answered {status}: {_snippet(head, response)}", retriable=False)
        result = {"status": status, "body": _parse_body(head, complete, response)}
        return result if complete else {**result, "truncated": True}


def url_value(before: str, value: str) -> str:
    """A `${}` value inside a URL (a templates.Encoder), percent-encoded so it cannot change the URL's shape.

    In a path segment, a query or a fragment every reserved character is encoded
    (`x/../../admin` stays one segment); in the host part `:` and `[]` stay (host:port,
    IPv6). A value at the very start is a base URL taken from a variable, used as it is.
    """
    scheme_end = before.find("://")
    if scheme_end < 0:
        return value
    if any(mark in before[scheme_end + 3 :] for mark in "/?#"):
        return quote(value, safe="")
    return quote(value, safe=":[]")


class HttpAction:
    """`http`: `method` (default POST), `url`, `body`, `headers`, `timeout` (`5s`, `PT5S` or seconds; default 10 s)."""

    name = "http"
    encoders = {"url": url_value}

    def __init__(self, caller: HttpCaller):
        self.caller = caller

    def validate(self, config: Mapping[str, Any]) -> list[str]:
        """Load-time problems: no url, an unknown method, a bad timeout or headers."""
        problems = config_problems(self.name, config, ("url",))
        if problems:
            return problems
        method = config.get("method")
        if method is not None and not is_template(method) and str(method).upper() not in METHODS:
            problems.append(f"http config.method must be one of {', '.join(METHODS)}, got {method!r}")
        headers = config.get("headers")
        if headers is not None and not isinstance(headers, Mapping):
            problems.append("http config.headers must be a mapping")
        timeout = config.get("timeout")
        if timeout is not None and not is_template(timeout):
            try:
                _timeout(timeout)
            except ActionError as error:
                problems.append(str(error))
        return problems

    def run(self, config: Mapping[str, Any], context: ActionContext) -> dict[str, Any]:
        """Send the request; see the module docstring for outcomes."""
        url = required_text(self.name, config, "url")
        return self.caller.request(
            str(config.get("method") or "POST"),
            url,
            body=config.get("body"),
            headers=config.get("headers"),
            timeout=_timeout(config.get("timeout", 10.0)),
            idempotency_key=context.idempotency_key,
            traceparent=context.traceparent,
            tracestate=context.tracestate,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.caller.close()


def _timeout(value: Any) -> float:
    """Seconds from a duration (`5s`, `PT5S`) or a number of seconds; must be positive."""
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ActionError(
            f"http config.timeout must be a positive duration (5s, PT5S) or number of seconds, got {value!r}",
            retriable=False,
        )
    return seconds


def _json_bytes(body: Any) -> bytes:
    try:
        return json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ActionError(f"http body is not JSON-serialisable: {error}", retriable=False) from None


def _read_head(response: httpx.Response) -> tuple[bytes, bool]:
    """The first MAX_BODY_BYTES of the body, and whether that is all of it; the rest is never read."""
    head = bytearray()
    for chunk in response.iter_bytes():
        head += chunk
        if len(head) > MAX_BODY_BYTES:
            return bytes(head[:MAX_BODY_BYTES]), False
    return bytes(head), True


def _text(head: bytes, response: httpx.Response) -> str:
    # A cut can split a character: the broken tail is dropped, not shown as garbage.
    return head.decode(response.encoding or "utf-8", errors="ignore")


def _parse_body(head: bytes, complete: bool, response: httpx.Response) -> Any:
    text = _text(head, response)
    if complete and "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _snippet(head: bytes, response: httpx.Response) -> str:
    text = _text(head, response).strip().replace("\n", " ")
    return text[:SNIPPET_CHARS] or response.reason_phrase


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
