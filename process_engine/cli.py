"""The `process-engine` console script."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from process_engine import __version__
from process_engine.cli_help import COMMANDS, epilog


def _validate(args: argparse.Namespace) -> int:
    from process_engine.adapters.definitions.yaml_loader import definition_files, load_paths
    from process_engine.app import definition_extensions
    from process_engine.domain.correlation_advice import correlation_warnings

    paths = [Path(p) for p in (args.paths or ["processes/"])]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    result = load_paths(paths, definition_extensions())
    for error in result.errors:
        print(error.location_text(), file=sys.stderr)
    warned = 0
    for definition_id, file in sorted(result.files.items(), key=lambda item: item[1]):
        print(f"ok  {file}  ({definition_id})")
        for warning in correlation_warnings(result.definitions[definition_id]):
            print(f"{file}: warning: {warning}")
            warned += 1
    checked = len(definition_files(paths))
    print(f"{checked} file(s) checked, {len(result.errors)} error(s)" + (f", {warned} warning(s)" if warned else ""))
    return 1 if result.errors else 0


def _settings():
    from process_engine.settings import Settings

    return Settings.from_environ(os.environ)


def _run(args: argparse.Namespace) -> int:
    from process_engine.adapters.observability.logs import configure_logging
    from process_engine.service import run_service

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    return run_service(settings)


def _migrate(args: argparse.Namespace) -> int:
    from process_engine.adapters.postgres.migrations import migrate
    from process_engine.adapters.postgres.timescale import configure_history

    settings = _settings()
    applied = migrate(settings.database_url)
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ' (up to date)'}")
    if settings.history_retention or settings.history_compress_after:
        configured = configure_history(settings.database_url, settings.history_retention, settings.history_compress_after)
        print("history retention/compression " + ("applied" if configured else "skipped: TimescaleDB is not in use"))
    return 0


def _store():
    from process_engine.adapters.postgres.store import PostgresInstanceStore

    return PostgresInstanceStore.connect(_settings().database_url, min_size=1, max_size=2)


def _instances(args: argparse.Namespace) -> int:
    from process_engine.ports import InstanceQuery

    with _store() as store:
        rows = store.find_instances(InstanceQuery(status=args.status, definition_id=args.definition, limit=args.limit))
    print(f"{'id':36}  {'definition':24} {'status':10} {'activity':20} {'key':16} started")
    for instance in rows:
        started = instance.started_at.isoformat(timespec="seconds") if instance.started_at else "-"
        key = instance.correlation_key if instance.correlation_key is not None else "-"
        print(f"{instance.id:36}  {instance.definition_id[:24]:24} {instance.status:10} "
              f"{(instance.current_activity or '-')[:20]:20} {key[:16]:16} {started}")
    return 0


def _history(args: argparse.Namespace) -> int:
    with _store() as store:
        instance = store.load(args.instance_id)
        if instance is None:
            print(f"error: no instance {args.instance_id}", file=sys.stderr)
            return 1
        records = store.history(args.instance_id)
    print(f"{instance.id} {instance.definition_id} v{instance.definition_version}: {instance.status}")
    for record in records:
        detail = record.message or (json.dumps(record.data, default=str) if record.data else "")
        print(f"{record.timestamp.isoformat(timespec='milliseconds')}  {(record.activity_id or '-'):20} {record.event_type:18} {detail}")
    return 0


def _start(args: argparse.Namespace) -> int:
    from process_engine.service import start_by_hand

    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"error: --var needs name=value, got {item!r}", file=sys.stderr)
            return 1
        variables[name] = _parse_value(value)
    try:
        instance = start_by_hand(_settings(), args.definition_id, variables)
    except KeyError:
        print(f"error: no definition '{args.definition_id}' in PROCESS_DEFINITIONS_PATH", file=sys.stderr)
        return 1
    print(f"started {instance.id} ({instance.status}, at {instance.current_activity or '-'})")
    return 0


def _parse_value(text: str):
    """JSON when it parses (numbers, booleans, objects), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _flow_test(args: argparse.Namespace) -> int:
    from process_engine.flowtest.commands import test_command

    return test_command(args.paths, args.junit, args.definitions or os.environ.get("PROCESS_DEFINITIONS_PATH"))


def _replay(args: argparse.Namespace) -> int:
    from process_engine.flowtest.commands import replay_command

    return replay_command(args.from_file, args.paths, args.json_output)


def _dev(args: argparse.Namespace) -> int:
    from process_engine.devstack.dev import dev_command

    return dev_command(keep=args.keep, definitions=args.definitions, http_addr=args.http_addr,
                       fast_timers=not args.no_fast_timers)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="process-engine",
        description="A durable process engine for telemetry: Kafka triggers, YAML activity graphs, "
        "PostgreSQL/TimescaleDB history, MQTT actions.",
    )
    parser.add_argument("--version", action="version", version=f"process-engine {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        summary, description, _, _ = COMMANDS[name]
        return commands.add_parser(name, help=summary, description=description, epilog=epilog(name),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    validate = command("validate")
    validate.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: processes/)")
    validate.set_defaults(handler=_validate)
    command("run").set_defaults(handler=_run)
    command("migrate").set_defaults(handler=_migrate)
    instances = command("instances")
    instances.add_argument("--status", choices=["running", "completed", "failed", "suspended", "cancelled"])
    instances.add_argument("--definition", help="only this definition id")
    instances.add_argument("--limit", type=int, default=50)
    instances.set_defaults(handler=_instances)
    history = command("history")
    history.add_argument("instance_id", help="the full instance id, as `instances` lists it")
    history.set_defaults(handler=_history)
    start = command("start")
    start.add_argument("definition_id", help="the definition's id")
    start.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a variable (JSON values are parsed)")
    start.set_defaults(handler=_start)
    flow = command("test")
    flow.add_argument("paths", nargs="*", metavar="PATH", help="test files or folders (default: processes/)")
    flow.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    flow.add_argument("--definitions", metavar="PATH", help="where to find definitions not beside the test file")
    flow.set_defaults(handler=_flow_test)
    replay = command("replay")
    replay.add_argument("--from", dest="from_file", required=True, metavar="FILE", help="recorded messages, one JSON object per line")
    replay.add_argument("paths", nargs="*", metavar="PATH", help="definition files or folders (default: processes/)")
    replay.add_argument("--json", dest="json_output", action="store_true", help="print the report as JSON")
    replay.set_defaults(handler=_replay)
    dev = command("dev")
    dev.add_argument("--keep", action="store_true", help="keep the temporary data (PostgreSQL, logs) on exit")
    dev.add_argument("--definitions", default="processes/", metavar="PATH", help="definitions to run (default: processes/)")
    dev.add_argument("--http-addr", metavar="HOST:PORT", help="HTTP API address (default 127.0.0.1:8080, "
                     "a free port if taken; port 0 picks one)")
    dev.add_argument("--no-fast-timers", action="store_true", help="run timers as written (default: a copy "
                     "with timer durations, wait timeouts and trigger for/within/cooldown divided by 10, at least 5 s)")
    dev.set_defaults(handler=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: errors a user can fix are one line, not a traceback."""
    from process_engine.domain.errors import ProcessEngineError, StoreUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except StoreUnavailable as error:
        print(f"error: {error}; check DATABASE_URL and that PostgreSQL runs and accepts connections", file=sys.stderr)
        return 2
    except ProcessEngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `process-engine test | head`: the reader left, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
