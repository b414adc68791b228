"""The definitions folder: initial load and hot reload, keeping the last good version of a broken file."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from process_engine.adapters.definitions.yaml_loader import definition_files, load_file
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.errors import DefinitionError, DefinitionErrors
from process_engine.domain.extensions import Extensions
from process_engine.runtime.registry import DefinitionRegistry

log = logging.getLogger("process_engine.definitions")


@dataclass
class FolderState:
    """What the folder held at the last scan."""

    stamps: dict[Path, tuple[float, int]] = field(default_factory=dict)
    good: dict[Path, ProcessDefinition] = field(default_factory=dict)
    errors: dict[Path, list[DefinitionError]] = field(default_factory=dict)


class DefinitionFolder:
    """Loads `*.yaml` definitions from a folder into the registry and follows changes."""

    def __init__(self, path: Path, registry: DefinitionRegistry, extensions: Extensions):
        self.path = path
        self.registry = registry
        self.extensions = extensions
        self.state = FolderState()
        self._lock = threading.Lock()
        self._activated = True  # False while an activation failed (the store was down): retry it

    def scan(self) -> bool:
        """Reload what changed; returns True when the active set was rebuilt.

        A file that fails to load is reported and its previous good version stays active;
        a removed file's definition stops triggering (running instances carry on). One
        bad file never stops the scan: the others load and every stamp is saved, so
        the bad file is not read again until it changes.
        """
        with self._lock:
            files = definition_files([self.path]) if self.path.exists() else []
            stamps = {p: _stamp(p) for p in files}
            if stamps == self.state.stamps and self._activated:
                return False
            for path in files:
                if self.state.stamps.get(path) != stamps[path]:
                    self._load_guarded(path)
            for gone in set(self.state.good) - set(files):
                log.info("definition file removed: %s", gone)
                self.state.good.pop(gone)
            for gone in set(self.state.errors) - set(files):
                self.state.errors.pop(gone)
            self.state.stamps = stamps
            self._activated = False
            self._activate()
            self._activated = True
            return True

    def _load_guarded(self, path: Path) -> None:
        """Load one file; whatever goes wrong is that file's error, and the scan goes on."""
        try:
            self._load(path)
        except Exception as error:  # the loader turns failures into DefinitionErrors; this is the last guard
            self._reject(path, [DefinitionError(f"cannot load the definition: {type(error).__name__}: {str(error)[:200]}", str(path), 1)])

    def _load(self, path: Path) -> None:
        try:
            definition = load_file(path, self.extensions)
        except DefinitionErrors as failure:
            self._reject(path, failure.errors)
            return
        self.state.errors.pop(path, None)
        self.state.good[path] = definition
        log.info("loaded %s from %s", definition.id, path)

    def _reject(self, path: Path, errors: list[DefinitionError]) -> None:
        self.state.errors[path] = errors
        kept = " (previous version stays active)" if path in self.state.good else ""
        for error in errors:
            log.error("invalid definition%s: %s", kept, error.location_text())

    def _activate(self) -> None:
        by_id: dict[str, ProcessDefinition] = {}
        for path, definition in sorted(self.state.good.items()):
            if definition.id in by_id:
                log.error("%s: duplicate definition id '%s'; keeping the first", path, definition.id)
                continue
            by_id[definition.id] = definition
        self.registry.activate(by_id.values())

    def errors(self) -> list[DefinitionError]:
        """Problems of the files that currently fail to load."""
        with self._lock:
            return [error for errors in self.state.errors.values() for error in errors]

    def watch(self, stop: threading.Event, interval: float = 2.0, on_change: Callable[[], None] | None = None) -> None:
        """Scan every `interval` seconds until stopped; `on_change` runs after a rebuilt active set."""
        while not stop.wait(interval):
            try:
                if self.scan() and on_change is not None:
                    on_change()
            except Exception:  # a scan must never kill the watcher; the next one retries
                log.exception("definition scan failed")


def _stamp(path: Path) -> tuple[float, int]:
    try:
        status = path.stat()
    except OSError:
        return (0.0, -1)
    return (status.st_mtime, status.st_size)
