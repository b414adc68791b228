"""`process-engine dev`: start the servers, the engine and the simulator; Ctrl-C stops it all."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from process_engine.devstack.fast_timers import FastTimerCopy
from process_engine.devstack.feed import ActivityFeed
from process_engine.devstack.servers import (
    DevStackError,
    KafkaBroker,
    MqttBroker,
    PostgresServer,
    free_port,
    port_is_free,
)
from process_engine.devstack.simulator import Simulator

if TYPE_CHECKING:
    from process_engine.adapters.definitions.folder import FolderEvent
    from process_engine.app import Engine

DEFAULT_HTTP_ADDR = "127.0.0.1:8080"
DATABASE = "process_engine"
SYNC_SECONDS = 2.0
TRY_SQL = (
    "SELECT i.definition_id, h.activity_id, h.event_type, h.timestamp "
    "FROM process_history h JOIN process_instances i ON i.id = h.instance_id "
    "ORDER BY h.timestamp DESC LIMIT 20"
)


@dataclass
class DevStack:
    """What is running, for the banner and for stopping in order."""

    root: Path
    definitions: Path
    source: Path
    kafka: KafkaBroker | None = None
    mqtt: MqttBroker | None = None
    postgres: PostgresServer | None = None
    database_url: str = ""
    http_addr: str = ""
    topics: list[str] = field(default_factory=list)
    fast: FastTimerCopy | None = None
    simulator: Simulator | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def dev_command(keep: bool = False, definitions: str = "processes/", http_addr: str | None = None,
                fast_timers: bool = True) -> int:
    """Run the whole stack until Ctrl-C (or SIGTERM).

    Args:
        keep: leave the temporary folder (PostgreSQL data, logs) in place and say where.
        definitions: the definition folder (or file) the engine runs; the simulator feeds its topics.
        http_addr: host:port of the HTTP API; default 127.0.0.1:8080, or a free port when that is taken.
        fast_timers: run a copy of the definitions with timer, wait and trigger durations divided by 10 (floor 5 s).

    Returns:
        The exit code: 0 after a clean stop.

    Raises:
        DevStackError: a server could not start; the message says what to install.
    """
    source = Path(definitions)
    if not source.exists():
        raise DevStackError(f"no definitions at {source}: run from the project folder or pass --definitions PATH")
    root = Path(tempfile.mkdtemp(prefix="process-engine-dev-"))
    root.chmod(0o755)  # as root, PostgreSQL runs as another user, who must reach its folder
    stack = DevStack(root, source, source)
    try:
        _start_servers(stack)
        _prepare(stack, fast_timers, http_addr)
        return _run_engine(stack)
    finally:
        _shutdown(stack, keep)


def _start_servers(stack: DevStack) -> None:
    say("starting Tansu (Kafka), the MQTT broker and PostgreSQL ...")
    stack.kafka = KafkaBroker(stack.root).start()
    stack.mqtt = MqttBroker(stack.root).start()
    stack.postgres = PostgresServer(stack.root)
    stack.postgres.start()
    stack.database_url = _create_database(stack.postgres.url, DATABASE)


def _create_database(admin_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _prepare(stack: DevStack, fast_timers: bool, http_addr: str | None) -> None:
    """Definitions (fast copy), topics, environment, migrations."""
    if fast_timers:
        stack.fast = FastTimerCopy(stack.source, stack.root / "definitions")
        stack.fast.sync()
        stack.definitions = stack.fast.target
    stack.topics = trigger_topics([stack.definitions])
    create_topics(stack.kafka.bootstrap, stack.topics)
    stack.http_addr = choose_http_addr(http_addr)
    # The PRODUCT.md names: the engine reads them, and so do commands run from this process.
    os.environ.update({
        "DATABASE_URL": stack.database_url,
        "REDPANDA_BROKERS": stack.kafka.bootstrap,
        "MQTT_URL": stack.mqtt.url,
        "PROCESS_DEFINITIONS_PATH": str(stack.definitions),
        "PROCESS_ENGINE_HTTP_ADDR": stack.http_addr,
    })
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    from process_engine.adapters.postgres.migrations import migrate

    applied = migrate(stack.database_url)
    say(f"applied {len(applied)} migration(s)")


def _run_engine(stack: DevStack) -> int:
    from process_engine.adapters.observability.logs import configure_logging
    from process_engine.service import run_service
    from process_engine.settings import Settings

    settings = Settings.from_environ(os.environ)
    # The activity feed is the dev output; engine logs stay at WARNING unless LOG_LEVEL asks.
    configure_logging(settings.log_level if os.environ.get("LOG_LEVEL") else "WARNING", settings.log_format)
    return run_service(settings, ready=lambda engine: _ready(stack, engine))


def _ready(stack: DevStack, engine: Engine) -> None:
    """The engine runs: start the feed, the simulator and the definition sync, then say where to look."""
    engine.step_listeners.append(ActivityFeed(sourced=lambda definition_id: _sourced(engine, definition_id)))
    engine.folder.listeners.append(lambda event: say(reload_text(stack, event)))
    bound = getattr(engine, "http_port", None)
    if bound:
        stack.http_addr = f"{stack.http_addr.rpartition(':')[0]}:{bound}"
    stack.simulator = Simulator(stack.kafka.bootstrap, stack.topics)
    _thread(stack, "simulator", stack.simulator.run, stack.stop)
    if stack.fast is not None:
        _thread(stack, "fast-timer-sync", _sync_loop, stack.fast, stack.stop)
    say(banner(stack))


def users_file(stack: DevStack, path: Path | str) -> Path:
    """The user's own file behind the engine's copy (the same file without fast timers)."""
    path = Path(path)
    if stack.fast is None:
        return path
    try:
        relative = path.relative_to(stack.fast.target)
    except ValueError:
        return path
    return stack.source if stack.source.is_file() else stack.source / relative


def reload_text(stack: DevStack, event: FolderEvent) -> str:
    """What a reload did, naming the user's file: loaded (with its fast timers), invalid or removed."""
    source = users_file(stack, event.path)
    if event.kind == "invalid":
        return "\n".join(f"{source}{f':{e.line}' if e.line else ''}: {e.reason} (not loaded; the previous version, "
                         f"if any, stays active)" for e in event.errors)
    if event.kind == "removed":
        return f"removed {source}: its definition starts nothing more"
    definition = event.definition
    lines = [f"loaded {definition.id} v{definition.version} from {source}"]
    if stack.fast is not None:
        changes = stack.fast.changes.get(str(event.path.relative_to(stack.fast.target)), [])
        lines.append(f"  fast timers: {', '.join(changes)}" if changes else "  fast timers: none to scale")
    lines += [f"  warning: {warning}" for warning in event.warnings]
    topic = definition.trigger.topic if definition.trigger.is_topic else None
    if topic and topic not in stack.topics:
        create_topics(stack.kafka.bootstrap, [topic])
        stack.topics.append(topic)
        lines.append(f"  created topic {topic} (no simulated data: produce to it yourself)")
    return "\n".join(lines)


def _sourced(engine: Engine, definition_id: str) -> set[str]:
    """The names of the variables a definition reads from the trigger message."""
    definition = engine.registry.current(definition_id)
    return {v.name for v in definition.variables if v.source is not None} if definition else set()


def _sync_loop(fast: FastTimerCopy, stop: threading.Event) -> None:
    while not stop.wait(SYNC_SECONDS):
        try:
            fast.sync()
        except OSError as error:  # a file mid-save; the next pass copies it
            logging.getLogger("process_engine.dev").warning("definition copy failed: %s", error)


def _thread(stack: DevStack, name: str, target: Callable[..., None], *args: object) -> None:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    stack.threads.append(thread)


def _shutdown(stack: DevStack, keep: bool) -> None:
    """Stop the simulator, then the servers; remove the folder unless it is kept."""
    in_main = threading.current_thread() is threading.main_thread()
    # A second Ctrl-C must not leave servers running: every step below has its own time limit.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        stack.stop.set()
        for thread in stack.threads:
            thread.join(10)
        _stop_servers(stack, keep)
        if keep:
            say(f"kept {stack.root} (PostgreSQL data, server logs)")
            if stack.postgres is not None and stack.postgres.data.exists():
                say(f"  start PostgreSQL on it again: {stack.postgres.restart_hint()}")
        else:
            shutil.rmtree(stack.root, ignore_errors=True)
            say(f"stopped; removed {stack.root}")
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _stop_servers(stack: DevStack, keep: bool) -> None:
    stops = (("MQTT", stack.mqtt and stack.mqtt.stop), ("Kafka", stack.kafka and stack.kafka.stop),
             ("PostgreSQL", stack.postgres and (lambda: stack.postgres.stop(keep=keep))))
    for name, stop in stops:
        try:
            if stop:
                stop()
        except Exception as error:  # one server failing to stop must not leave the others running
            say(f"could not stop {name}: {error}")


def trigger_topics(paths: Iterable[Path]) -> list[str]:
    """The Kafka trigger topics of the definitions that load."""
    from process_engine.adapters.definitions.yaml_loader import load_paths
    from process_engine.app import definition_extensions

    result = load_paths(paths, definition_extensions())
    return sorted({d.trigger.topic for d in result.definitions.values() if d.trigger.is_topic and d.trigger.topic})


def create_topics(bootstrap: str, topics: list[str], partitions: int = 3) -> None:
    """Create the trigger topics up front, so the engine's consumer is assigned them at once."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics])
    for topic, future in futures.items():
        try:
            future.result(10)
        except KafkaException as error:
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise DevStackError(f"could not create topic {topic}: {error}") from None


def choose_http_addr(requested: str | None) -> str:
    """The requested address (port 0: a free port), or 127.0.0.1:8080, or a free port if 8080 is taken."""
    host, _, port = (requested or DEFAULT_HTTP_ADDR).rpartition(":")
    if not port.isdigit():
        raise DevStackError(f"--http-addr must be host:port, got {requested!r}")
    if int(port) == 0 or (requested is None and not port_is_free(host, int(port))):
        return f"{host}:{free_port(host)}"
    return f"{host}:{port}"


def say(text: str) -> None:
    """Print at once: the output may be a pipe."""
    print(text, flush=True)


def subscribe_command(port: int) -> str:
    """A ready-to-paste command that prints every MQTT message (amqtt's when mosquitto_sub is missing)."""
    command = f"mosquitto_sub -h 127.0.0.1 -p {port} -t '#' -v"
    amqtt_sub = _amqtt_sub()
    if shutil.which("mosquitto_sub") or amqtt_sub is None:
        return command
    return f"{command}\n{'':16}or: {amqtt_sub} --url mqtt://127.0.0.1:{port} -t '#'"


def _amqtt_sub() -> str | None:
    beside = Path(sys.executable).parent / "amqtt_sub"
    return str(beside) if beside.exists() else shutil.which("amqtt_sub")


def _console_script() -> str:
    """How to run `process-engine` from another terminal: the venv's script when it is not on PATH."""
    beside = Path(sys.executable).parent / "process-engine"
    if shutil.which("process-engine") or not beside.exists():
        return "process-engine"
    return str(beside)


def _indented(lines: list[str]) -> str:
    return "".join(f"\n{'':16}{line}" for line in lines)


def _definitions_text(stack: DevStack) -> str:
    if stack.fast is None:
        return f"{stack.definitions} (timers as written)"
    return (f"{stack.definitions}\n{'':16}a copy of {stack.source} with fast timers (edits there are copied over; "
            f"--no-fast-timers runs the originals):{_indented(stack.fast.summary() or ['no timers to scale'])}")


def banner(stack: DevStack) -> str:
    """Where to look, once everything runs."""
    postgres, mqtt, kafka, simulator = stack.postgres, stack.mqtt, stack.kafka, stack.simulator
    flavour = "with TimescaleDB" if postgres.has_timescaledb() else "plain, no TimescaleDB"
    simulated = [f"{s.topic}: {s.summary}" for s in simulator.sources]
    simulated += [f"{topic}: no simulated data (produce to it yourself)" for topic in simulator.unknown]
    host, _, port = stack.http_addr.rpartition(":")
    return "\n".join([
        "",
        f"process-engine dev is running (ready in {time.monotonic() - stack.started:.1f}s). Ctrl-C stops everything.",
        "",
        f"  PostgreSQL    psql {stack.database_url}",
        f"{'':16}(PostgreSQL {postgres.version} from {postgres.bin_dir}, {flavour})",
        f"  MQTT          {mqtt.kind} on 127.0.0.1:{mqtt.port}:  {subscribe_command(mqtt.port)}",
        f"  Kafka         bootstrap {kafka.bootstrap} (Tansu, in memory); topics: {', '.join(stack.topics) or 'none'}",
        f"  HTTP          curl http://{host}:{port}/readyz    (also /healthz, /metrics, /instances)",
        f"  Console       http://{host}:{port}/ui    (definitions as graphs, each instance's trace, dead letters)",
        f"  Definitions   {_definitions_text(stack)}",
        f"  Simulator     about 3 messages a second:{_indented(simulated or ['nothing to simulate'])}",
        f"  Data          {stack.root} (removed on exit; --keep keeps it)",
        "",
        "Try this:",
        f'  psql {stack.database_url} -c "{TRY_SQL}"',
        f"  DATABASE_URL={stack.database_url} {_console_script()} instances",
        f"  DATABASE_URL={stack.database_url} PROCESS_DEFINITIONS_PATH={stack.definitions} {_console_script()} start ID --var k=v",
        f"{'':4}(the engine's own definitions{', with fast timers' if stack.fast else ''}: the same version it runs)",
        "",
        f"Edit files in {stack.source}: each reload prints what it loaded, or the file:line of what is wrong.",
        "",
        "Activity (instances starting and ending, actions done, timers firing):",
    ])
