"""The `process-engine` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from process_engine import __version__


def _validate(args: argparse.Namespace) -> int:
    from process_engine.adapters.yaml_loader import definition_files, load_paths
    from process_engine.app import definition_extensions

    paths = [Path(p) for p in (args.paths or ["processes/"])]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    result = load_paths(paths, definition_extensions())
    for error in result.errors:
        print(error.location_text(), file=sys.stderr)
    for definition_id, file in sorted(result.files.items(), key=lambda item: item[1]):
        print(f"ok  {file}  ({definition_id})")
    checked = len(definition_files(paths))
    print(f"{checked} file(s) checked, {len(result.errors)} error(s)")
    return 1 if result.errors else 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="process-engine",
        description="A durable process engine for telemetry: Kafka triggers, YAML activity graphs, "
        "PostgreSQL/TimescaleDB history, MQTT actions.",
    )
    parser.add_argument("--version", action="version", version=f"process-engine {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate = commands.add_parser("validate", help="check definition files; exit 1 with file:line reasons on any error")
    validate.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: processes/)")
    validate.set_defaults(handler=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
