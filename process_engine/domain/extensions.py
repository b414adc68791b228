"""What plugs into definition building from outside: actions and custom activity types."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Extensions:
    """What plugs in from outside: action names (with config checks) and custom activity types."""

    actions: Mapping[str, Callable[[Mapping[str, Any]], list[str]] | None] = field(
        default_factory=dict
    )
    activity_types: Mapping[str, Any] = field(default_factory=dict)
    compensation_handlers: Mapping[str, Any] = field(default_factory=dict)
    check_actions: bool = True
    # action -> config key -> how `${}` values are put into that key's text (templates.Encoder)
    encoders: Mapping[str, Mapping[str, Callable[[str, str], str]]] = field(default_factory=dict)
