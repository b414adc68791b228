"""The action registry: built-in and custom actions by name.

Custom actions plug in through the Python entry point group `process_engine.actions`
without forking. In the package that provides them:

    [project.entry-points."process_engine.actions"]
    open_valve = "acme_valves.actions:OpenValveAction"

The entry point's name (`open_valve`) is the action name definitions use
(`action: open_valve`). Its object is a class or factory called with no arguments;
what it returns needs `run(config, context)`, and may have `validate(config) ->
list[str]` (problems reported when definitions load), `close()` and `encoders` (config
key -> function putting a `${}` value into that key's text, as `http` does for its
URL). A custom action cannot replace a built-in one or another custom one.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from process_engine.adapters.actions.base import Action, ActionContext
from process_engine.domain.errors import ActionError, ConfigError

ENTRY_POINT_GROUP = "process_engine.actions"

logger = logging.getLogger(__name__)


class ActionRegistry:
    """Actions by name: validates configs at load time and runs actions."""

    def __init__(self, actions: Iterable[Action] = ()):
        self._actions: dict[str, Action] = {}
        for action in actions:
            self.register(action)

    def register(self, action: Action, name: str | None = None) -> None:
        """Add an action under `name` (default: its `name` attribute).

        Raises:
            ConfigError: the name is taken, or the object has no `run` method.
        """
        name = name or getattr(action, "name", None)
        if not name:
            raise ConfigError(f"action {action!r} has no name")
        if not callable(getattr(action, "run", None)):
            raise ConfigError(f"action {name!r} has no run(config, context) method")
        if name in self._actions:
            raise ConfigError(f"action {name!r} is registered twice")
        self._actions[name] = action

    def names(self) -> frozenset[str]:
        """Every registered action name, for the definition validator."""
        return frozenset(self._actions)

    def encoders(self) -> dict[str, Mapping[str, Callable[[str, str], str]]]:
        """Per action, the config keys whose `${}` values are encoded (an action's `encoders`)."""
        found = {name: getattr(action, "encoders", None) for name, action in self._actions.items()}
        return {name: encoders for name, encoders in found.items() if encoders}

    def get(self, name: str) -> Action:
        """The action called `name`.

        Raises:
            ActionError: no such action (not retriable).
        """
        action = self._actions.get(name)
        if action is None:
            raise ActionError(f"unknown action {name!r} (known: {', '.join(sorted(self._actions))})", retriable=False)
        return action

    def validate(self, name: str, config: Any) -> list[str]:
        """Problems with one service activity's action and config; empty when it is fine."""
        action = self._actions.get(name)
        if action is None:
            return [f"unknown action {name!r} (known: {', '.join(sorted(self._actions))})"]
        validate = getattr(action, "validate", None)
        if validate is None:
            return []
        return list(validate(config if config is not None else {}))

    def run(self, name: str, config: Mapping[str, Any], context: ActionContext) -> Any:
        """Run the action called `name`.

        Raises:
            ActionError: the action failed or does not exist. Other exceptions from
                custom actions are wrapped as retriable ActionErrors.
        """
        action = self.get(name)
        try:
            return action.run(config if config is not None else {}, context)
        except ActionError:
            raise
        except Exception as error:
            # A custom action's bug or an unexpected library error: retry, record why.
            raise ActionError(f"action {name!r} raised {type(error).__name__}: {error}") from error

    def load_entry_points(
        self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None
    ) -> list[str]:
        """Register the actions of the `process_engine.actions` entry point group.

        `entry_points` defaults to the installed ones. Returns the names loaded.

        Raises:
            ConfigError: an entry point fails to load, or its name is taken.
        """
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        loaded = []
        for entry_point in entry_points:
            if entry_point.name in self._actions:
                raise ConfigError(
                    f"entry point {entry_point.name} = {entry_point.value} ({ENTRY_POINT_GROUP}): "
                    f"the action name {entry_point.name!r} is already taken"
                )
            self.register(_instantiate(entry_point), name=entry_point.name)
            loaded.append(entry_point.name)
            logger.info("loaded action %r from %s", entry_point.name, entry_point.value)
        return loaded

    def close(self) -> None:
        """Close every action that holds resources."""
        for action in self._actions.values():
            close = getattr(action, "close", None)
            if callable(close):
                close()


def _instantiate(entry_point: importlib.metadata.EntryPoint) -> Action:
    where = f"entry point {entry_point.name} = {entry_point.value} ({ENTRY_POINT_GROUP})"
    try:
        factory = entry_point.load()
        return factory()
    except Exception as error:
        raise ConfigError(f"{where} failed to load: {type(error).__name__}: {error}") from error
