"""What a trigger remembers about one correlation key: an open hold, recent counts, a cooldown.

Plain data, stored one row per (definition, key) with a version for optimistic
concurrency, so a message updating a hold and a replica completing it cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TriggerState:
    """The hold, count and cooldown state of one (definition, correlation key).

    `held_since`/`due_at` are set while a `for` hold is open; `variables`, `document`,
    `missing` and `cause` are of the latest matching message, what the instance
    starts with. `counts` are the times of the latest matching messages (at most
    `count` - 1 of them). `version` is the stored version (0: not stored yet).
    """

    definition_id: str
    correlation_key: str
    trigger_hash: str
    definition_version: int = 0
    held_since: datetime | None = None
    due_at: datetime | None = None
    variables: dict[str, Any] | None = None
    document: Any = None
    missing: tuple[str, ...] = ()
    cause: str | None = None
    counts: tuple[datetime, ...] = ()
    cooldown_until: datetime | None = None
    # Windowed variables (engine/windows.py): variable name -> its bucketed state; None when none.
    windows: dict[str, Any] | None = None
    version: int = 0

    @property
    def holding(self) -> bool:
        """True while a `for` hold is open."""
        return self.due_at is not None

    @property
    def key(self) -> tuple[str, str]:
        """(definition id, correlation key)."""
        return (self.definition_id, self.correlation_key)

    def without_hold(self) -> TriggerState:
        """This state with its hold closed."""
        return replace(self, held_since=None, due_at=None, variables=None, document=None, missing=(), cause=None)

    def is_empty(self, now: datetime) -> bool:
        """Nothing left worth keeping: no hold, no counts, no cooldown still running."""
        cooling = self.cooldown_until is not None and self.cooldown_until > now
        return not self.holding and not self.counts and not cooling and not self.windows
