"""What history keeps of an action's rendered config: header values are secrets (API keys, bearer tokens).

The outbox row keeps the real values until the action is delivered; history, which
the API and SQL readers see, keeps `***` in their place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REDACTED = "***"
ACTION_REQUESTED = "action_requested"


def redacted(data: Any) -> Any:
    """An `action_requested` row's data with every `config.headers` value replaced by `***`."""
    config = data.get("config") if isinstance(data, Mapping) else None
    headers = config.get("headers") if isinstance(config, Mapping) else None
    if not isinstance(headers, Mapping):
        return data
    return {**data, "config": {**config, "headers": dict.fromkeys(headers, REDACTED)}}
