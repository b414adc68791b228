"""The definition registry: what is active now, and every version instances still run on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import replace

from process_engine.domain.building import build_definition
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.extensions import Extensions
from process_engine.ports import InstanceStore, StoredDefinition

log = logging.getLogger("process_engine.definitions")


class DefinitionRegistry:
    """Active definitions by id and topic; older versions are fetched from the store on demand.

    Saving a definition gives it its version: the same content keeps its version,
    changed content gets the next one. Instances keep the version they started with.
    """

    def __init__(self, store: InstanceStore, extensions: Extensions | None = None):
        self._store = store
        self._extensions = extensions or Extensions(check_actions=False)
        self._lock = threading.Lock()
        self._active: dict[str, ProcessDefinition] = {}
        self._versions: dict[tuple[str, int], ProcessDefinition] = {}
        # Read for every message: rebuilt whole on each activate, so readers need no lock.
        self._by_topic: dict[str, list[ProcessDefinition]] = {}

    def activate(self, definitions: Iterable[ProcessDefinition]) -> list[ProcessDefinition]:
        """Make exactly these definitions the active set (hot reload passes the whole set)."""
        registered = [self._register(definition) for definition in definitions]
        with self._lock:
            before, self._active = self._active, {definition.id: definition for definition in registered}
            by_topic: dict[str, list[ProcessDefinition]] = {}
            for definition in registered:
                if definition.trigger.is_topic and definition.trigger.topic:
                    by_topic.setdefault(definition.trigger.topic, []).append(definition)
            self._by_topic = by_topic
        for definition in registered:
            _tell_trigger_change(before.get(definition.id), definition)
        return registered

    def _register(self, definition: ProcessDefinition) -> ProcessDefinition:
        stored = self._store.save_definition(
            StoredDefinition(
                id=definition.id,
                version=definition.version,
                name=definition.name,
                definition=definition.raw,
                content_hash=definition.content_hash,
            )
        )
        versioned = replace(definition, version=stored.version)
        with self._lock:
            self._versions[(versioned.id, versioned.version)] = versioned
        return versioned

    def active(self) -> list[ProcessDefinition]:
        """The definitions that start instances now."""
        with self._lock:
            return list(self._active.values())

    def current(self, definition_id: str) -> ProcessDefinition | None:
        """The active version of a definition."""
        with self._lock:
            return self._active.get(definition_id)

    def for_topic(self, topic: str) -> list[ProcessDefinition]:
        """Active definitions triggered by messages on `topic` (do not change the list)."""
        return self._by_topic.get(topic, [])

    def topics(self) -> set[str]:
        """Every trigger topic of the active definitions."""
        return {d.trigger.topic for d in self.active() if d.trigger.is_topic and d.trigger.topic}

    def get(self, definition_id: str, version: int) -> ProcessDefinition:
        """A specific version, rebuilt from the store when it is no longer active.

        Raises:
            KeyError: no such definition version is stored.
        """
        with self._lock:
            found = self._versions.get((definition_id, version))
        if found is not None:
            return found
        stored = self._store.load_definition(definition_id, version)
        if stored is None:
            raise KeyError(f"definition {definition_id} version {version} is not stored")
        built = replace(build_definition(stored.definition, {}, f"<stored {definition_id} v{version}>", self._extensions), version=version)
        with self._lock:
            self._versions[(definition_id, version)] = built
        return built


def _tell_trigger_change(before: ProcessDefinition | None, after: ProcessDefinition) -> None:
    """One line when a reload changes the trigger of a definition with hold rules: its holds go."""
    if before is None or not (before.trigger.holds or after.trigger.holds):
        return
    if before.trigger.config_hash != after.trigger.config_hash:
        log.warning(
            "trigger of %s changed (v%s -> v%s): its pending holds and counts are dropped",
            after.id, before.version, after.version, extra={"definition_id": after.id},
        )
