"""The definitions folder: initial load and hot reload, keeping the last good version of a broken file."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from process_engine.adapters.definitions.yaml_loader import definition_files, load_file
from process_engine.domain.correlation_advice import correlation_warnings
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


@dataclass(frozen=True)
class FolderEvent:
    """What one scan did with one file: `loaded` (with its definition), `invalid` (with its errors) or `removed`."""

    kind: str
    path: Path
    definition: ProcessDefinition | None = None
    errors: tuple[DefinitionError, ...] = ()
    warnings: tuple[str, ...] = ()


class DefinitionFolder:
    """Loads `*.yaml` definitions from a folder into the registry and follows changes."""

    def __init__(self, path: Path, registry: DefinitionRegistry, extensions: Extensions):
        self.path = path
        self.registry = registry
        self.extensions = extensions
        self.state = FolderState()
        self._lock = threading.Lock()
        self._activated = True  # False while an activation failed (the store was down): retry it
        # Told about every file a scan loads, rejects or loses (`process-engine dev` prints them).
        self.listeners: list[Callable[[FolderEvent], None]] = []

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
            events = [self._load_guarded(path) for path in files if self.state.stamps.get(path) != stamps[path]]
            for gone in set(self.state.good) - set(files):
                log.info("definition file removed: %s", gone)
                self.state.good.pop(gone)
                events.append(FolderEvent("removed", gone))
            for gone in set(self.state.errors) - set(files):
                self.state.errors.pop(gone)
            self.state.stamps = stamps
            self._activated = False
            self._activate()
            self._activated = True
            for event in events:
                self._tell(self._registered(event))
            return True

    def _load_guarded(self, path: Path) -> FolderEvent:
        """Load one file; whatever goes wrong is that file's error, and the scan goes on."""
        try:
            return self._load(path)
        except Exception as error:  # the loader turns failures into DefinitionErrors; this is the last guard
            reason = f"cannot load the definition: {type(error).__name__}: {str(error)[:200]}"
            return self._reject(path, [DefinitionError(reason, str(path), 1)])

    def _load(self, path: Path) -> FolderEvent:
        try:
            definition = load_file(path, self.extensions)
        except DefinitionErrors as failure:
            return self._reject(path, failure.errors)
        self.state.errors.pop(path, None)
        self.state.good[path] = definition
        warnings = tuple(correlation_warnings(definition))
        for warning in warnings:
            log.warning("%s: warning: %s", path, warning)
        return FolderEvent("loaded", path, definition=definition, warnings=warnings)

    def _reject(self, path: Path, errors: list[DefinitionError]) -> FolderEvent:
        self.state.errors[path] = errors
        kept = " (previous version stays active)" if path in self.state.good else ""
        for error in errors:
            log.error("invalid definition%s: %s", kept, error.location_text())
        return FolderEvent("invalid", path, errors=tuple(errors))

    def _registered(self, event: FolderEvent) -> FolderEvent:
        """A loaded file's event with the version the registry stored it under."""
        if event.definition is None:
            return event
        active = self.registry.current(event.definition.id)
        if active is None or active.content_hash != event.definition.content_hash:
            return event  # a duplicate id: the first file's definition stays
        log.info("loaded %s v%s from %s", active.id, active.version, event.path)
        return replace(event, definition=active)

    def _tell(self, event: FolderEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop the scan
                log.exception("definition folder listener failed on %s", event.path)

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
