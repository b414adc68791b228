"""Running the service: start-up, signals and graceful stop around the Engine."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from process_engine.adapters.actions import builtin_registry
from process_engine.adapters.http.api import create_app
from process_engine.adapters.http.server import HttpServer
from process_engine.app import INLINE_ACTIONS, Engine, definition_extensions, inline_runner
from process_engine.domain.instance import InstanceState
from process_engine.settings import Settings

log = logging.getLogger("process_engine")
SIGNAL_CHECK_SECONDS = 0.2


# Young objects a collection waits for. A batch makes and frees hundreds of thousands of
# small objects, nearly all freed by reference counting; at Python's default of 700 the
# cyclic collector ran some 25 times per batch of 500 and took a tenth of the CPU. At
# 20,000 its young collections still took 1.2 s of 100,000 five-activity instances (each
# one walked the batch in flight); at 100,000, 0.04 s.
GC_YOUNG_THRESHOLD = 100_000
# How long a thread may keep the GIL while another waits for it. The consumer works
# through one batch while the committer thread sends the one before; back from each
# database round trip the committer waited up to Python's default of 5 ms for the GIL,
# and the pipeline ran about 15 % slower than at 1 ms.
GIL_SWITCH_SECONDS = 0.001


def tune_runtime() -> None:
    """Tune the interpreter for a long-running engine (call once, after start-up).

    What start-up built (definitions, compiled expressions, clients) lives as long as the
    process, so it is frozen out of every later garbage collection.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


def run_service(settings: Settings, ready: Callable[[Engine], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT; the batch in hand commits before the process exits."""
    engine = Engine(settings)
    engine.build()
    stop = engine.stop_event
    signalled: list[int] = []
    # The handler only records the signal: Event.set() from a handler can deadlock on the
    # lock the interrupted main thread holds inside Event.wait().
    previous = {sig: signal.signal(sig, lambda number, _: signalled.append(number)) for sig in (signal.SIGTERM, signal.SIGINT)}
    http: HttpServer | None = None
    try:
        engine.start()
        tune_runtime()
        http = HttpServer(create_app(engine, settings.api_token, settings.trace_ui_url), settings.http_host, settings.http_port).start()
        engine.serving_http(settings.http_host, http.port)
        log.info("process-engine running (group %s, brokers %s, HTTP %s)", settings.group_id, settings.kafka_brokers, http.url)
        if ready is not None:
            ready(engine)
        # Poll, not a bare wait(): a signal that lands on a worker thread runs its Python
        # handler only when the main thread wakes up.
        while not signalled and not stop.is_set():
            time.sleep(SIGNAL_CHECK_SECONDS)
        reason = signal.Signals(signalled[0]).name if signalled else "a worker stopped"
        log.info("stopping (%s): finishing the batch in hand", reason)
    finally:
        stop.set()  # readiness turns 503 at once while the rest winds down
        if http is not None:
            http.stop()
        engine.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")
    return 0


def start_by_hand(settings: Settings, definition_id: str, variables: Mapping[str, Any]) -> InstanceState:
    """Start one instance from the command line, against the same database the service uses.

    Raises:
        KeyError: the definition is not in PROCESS_DEFINITIONS_PATH.
    """
    from process_engine.adapters.definitions.folder import DefinitionFolder
    from process_engine.adapters.postgres.migrations import migrate
    from process_engine.adapters.postgres.store import PostgresInstanceStore
    from process_engine.runtime.dispatcher import Dispatcher
    from process_engine.runtime.registry import DefinitionRegistry

    migrate(settings.database_url)
    extensions = definition_extensions()
    with PostgresInstanceStore.connect(settings.database_url, min_size=1, max_size=2) as store:
        registry = DefinitionRegistry(store, extensions)
        DefinitionFolder(settings.definitions_path, registry, extensions).scan()
        # Local actions run here as in the service; the rest wait in the outbox for it.
        actions = builtin_registry()
        inline = {name: inline_runner(actions, name) for name in INLINE_ACTIONS}
        return Dispatcher(store, registry, inline_actions=inline).start(definition_id, variables, cause="cli")


__all__ = ["run_service", "start_by_hand"]
