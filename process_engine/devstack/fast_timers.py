"""Fast timers for `process-engine dev`: a copy of the definitions with timer durations scaled down.

The seed's recheck timer is five minutes; nobody watches a demo that long. The
copy divides every timer `duration`, wait `timeout` and trigger `for`, `within`
and `cooldown` by 10 (never below 5 s, and never longer than it was). Only those values change, in place: every other byte
and every line number stays, so load errors point at the same lines as the
originals. Edits to the originals are copied over while `dev` runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from process_engine.adapters.definitions.yaml_loader import definition_files
from process_engine.domain.durations import parse_duration

FACTOR = 10
FLOOR_SECONDS = 5.0
# Which key of which activity type holds a duration the engine waits for.
SCALED_KEYS = {"timer": "duration", "wait": "timeout"}
# The trigger's durations: a hold, a count window, a cooldown.
TRIGGER_KEYS = ("for", "within", "cooldown")
_PLAIN_TOKEN = re.compile(r"[^\s#,}\]]+")


def scaled(value: Any) -> str | None:
    """The shorter duration as `30s`, or None when it stays as it is (or is not a duration)."""
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError:
        return None
    shorter = min(seconds, max(FLOOR_SECONDS, seconds / FACTOR))
    if shorter >= seconds:
        return None
    return f"{shorter:g}s"


def scale_text(text: str) -> tuple[str, list[str]]:
    """Rewrite the timer durations of one definition; returns the text and what changed.

    Text that does not parse is returned unchanged: the engine reports the error.
    """
    try:
        document = YAML(typ="rt").load(text)
    except YAMLError:
        return text, []
    activities = document.get("activities") if isinstance(document, dict) else None
    if not isinstance(activities, list):
        return text, []
    lines = text.splitlines(keepends=True)
    changes = []
    trigger = document.get("trigger")
    if isinstance(trigger, dict):
        changes += [c for key in TRIGGER_KEYS if key in trigger and (c := _scale(trigger, key, "trigger", lines))]
    for activity in activities:
        key = SCALED_KEYS.get(activity.get("type")) if isinstance(activity, dict) else None
        if key is not None and key in activity and (change := _scale(activity, key, activity.get("id"), lines)):
            changes.append(change)
    return "".join(lines), changes


def _scale(mapping: Any, key: str, owner: Any, lines: list[str]) -> str | None:
    """Rewrite one duration in place; `trigger for 5m -> 30s`, or None when it stays."""
    new = scaled(mapping[key])
    if new is None:
        return None
    line, column = mapping.lc.value(key)
    text = lines[line]
    if text[column] in "'\"":
        end = text.index(text[column], column + 1) + 1
    else:
        match = _PLAIN_TOKEN.match(text, column)
        end = match.end() if match else column
    lines[line] = text[:column] + new + text[end:]
    return f"{owner} {key + ' ' if owner == 'trigger' else ''}{mapping[key]} -> {new}"


@dataclass
class FastTimerCopy:
    """Keeps `target` a fast-timer copy of the definition files under `source`."""

    source: Path
    target: Path
    seen: dict[Path, tuple[float, int]] = field(default_factory=dict)
    changes: dict[str, list[str]] = field(default_factory=dict)

    def sync(self) -> bool:
        """Copy new and changed files, remove deleted ones; True when anything changed."""
        self.target.mkdir(parents=True, exist_ok=True)
        current = {path: self._relative(path) for path in definition_files([self.source])}
        changed = False
        for path, relative in current.items():
            stat = path.stat()
            if self.seen.get(path) != (stat.st_mtime, stat.st_size):
                self._copy(path, relative)
                self.seen[path] = (stat.st_mtime, stat.st_size)
                changed = True
        for path in set(self.seen) - set(current):
            (self.target / self._relative(path)).unlink(missing_ok=True)
            self.changes.pop(str(self._relative(path)), None)
            del self.seen[path]
            changed = True
        return changed

    def _relative(self, path: Path) -> Path:
        return Path(path.name) if self.source.is_file() else path.relative_to(self.source)

    def _copy(self, path: Path, relative: Path) -> None:
        text, changes = scale_text(path.read_text(encoding="utf-8"))
        destination = self.target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: the engine's folder watcher never reads a half-written file.
        partial = destination.with_name(destination.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(destination)
        self.changes[str(relative)] = changes

    def summary(self) -> list[str]:
        """`temperature-control.yaml: wait_recheck 5m -> 30s`, one line per file with changes."""
        return [f"{file}: {', '.join(changes)}" for file, changes in sorted(self.changes.items()) if changes]
