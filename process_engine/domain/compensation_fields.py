"""A service activity's `compensate:`: the action that undoes it, or a plug-in handler.

    compensate: {action: mqtt_publish, config: {topic: ..., payload: {state: off}}}
    compensate: {handler: close_valve, valve: V-3}     # entry point process_engine.compensations
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from process_engine.domain.definition import Compensation
from process_engine.domain.field_builder import FieldBuilder, Path
from process_engine.domain.name_checks import suggestion


def check_action(builder: FieldBuilder, action: str | None, config: Mapping[str, Any], path: Path) -> None:
    """An action name the engine knows, and a config its own check accepts (a service's, or its undo's)."""
    extensions = builder.extensions
    if action is None or not extensions.check_actions:
        return
    if action not in extensions.actions:
        builder.fail(path + ("action",), f"unknown action '{action}'{suggestion(action, extensions.actions)} (known: {sorted(extensions.actions)})")
        return
    check = extensions.actions[action]
    for problem in (check(config) if check else []):
        builder.fail(path + ("config",), f"action '{action}': {problem}")


def read_compensate(builder: FieldBuilder, raw: Any, path: Path) -> Compensation | None:
    """The compensation of one service activity, or None when it has none (or is wrong: then recorded)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        builder.fail(path, "'compensate' must be a mapping with 'action' and 'config', or 'handler'")
        return None
    if "handler" in raw:
        return _handler(builder, raw, path)
    unknown = sorted(set(raw) - {"action", "config"})
    for key in unknown:
        builder.fail(path + (key,), f"unknown key '{key}' in 'compensate' (allowed: action, config; or handler)")
    action = builder.text(raw, "action", path)
    config = raw.get("config") or {}
    if not isinstance(config, Mapping):
        builder.fail(path + ("config",), "'config' must be a mapping")
        return None
    extensions = builder.extensions
    check_action(builder, action, config, path)
    encoders = extensions.encoders.get(action or "")  # as for the action itself: URL and topic values stay in place
    return Compensation(action=action, config=builder.template(path + ("config",), dict(config), encoders))


def _handler(builder: FieldBuilder, raw: Mapping[str, Any], path: Path) -> Compensation | None:
    name = raw["handler"]
    handlers = builder.extensions.compensation_handlers
    if not isinstance(name, str) or name not in handlers:
        builder.fail(path + ("handler",), f"unknown compensation handler {name!r} (known: {sorted(handlers)})")
        return None
    handler = handlers[name]
    options = {k: v for k, v in raw.items() if k != "handler"}
    for problem in (handler.validate(options) if hasattr(handler, "validate") else []):
        builder.fail(path, f"compensation handler '{name}': {problem}")
    return Compensation(handler_name=name, options=options, handler=handler)
