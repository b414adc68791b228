"""Serve the control plane with uvicorn on a background thread; the service keeps the signals."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from process_engine.domain.errors import ConfigError

log = logging.getLogger("process_engine.http")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM and SIGINT belong to the service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 picks a free one).

    Raises:
        ConfigError: the address cannot be bound; the message names PROCESS_ENGINE_HTTP_ADDR.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise ConfigError(f"PROCESS_ENGINE_HTTP_ADDR {host}:{port} cannot be used: {error}") from error
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise ConfigError(f"PROCESS_ENGINE_HTTP_ADDR {host}:{port} cannot be listened on ({error}); pick another address") from error
    sock.setblocking(False)
    return sock


class HttpServer:
    """uvicorn serving one ASGI app until `stop()`; `port` is the bound port."""

    def __init__(self, app: ASGIApp, host: str, port: int, shutdown_seconds: float = 5.0):
        config = uvicorn.Config(
            app,
            log_config=None,  # keep the engine's logging setup
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=int(shutdown_seconds),
        )
        self.server = _Server(config)
        self.host = host
        self.socket = listen(host, port)
        self.port: int = self.socket.getsockname()[1]
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where to reach it from this machine."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> HttpServer:
        """Serve on a daemon thread; returns once requests are accepted."""
        self.thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the HTTP server on {self.host}:{self.port} did not start (PROCESS_ENGINE_HTTP_ADDR)")
            time.sleep(0.01)
        log.info("HTTP control plane on %s", self.url)
        return self

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except BaseException:  # uvicorn exits through SystemExit when start-up fails
            log.exception("the HTTP server stopped")

    def alive(self) -> bool:
        """True while the server thread runs."""
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting requests, let those in flight finish, and wait for the thread."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
        self.socket.close()


__all__ = ["HttpServer", "listen"]
