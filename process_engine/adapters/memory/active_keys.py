"""ActiveKeys for the in-memory store: exact, read from the store itself."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.ports import AnsweredSync, KeyFilter


class MemoryActiveKeys:
    """Every pair with an active instance in the store, and no other (a process has no other writers)."""

    def __init__(self, store: MemoryInstanceStore):
        self.store = store

    def sync(self) -> KeyFilter:
        """Nothing to catch up on: the filter reads the store when it is used."""
        return self

    def start_sync(self) -> AnsweredSync:
        """`sync`, answered at once."""
        return AnsweredSync(self.sync())

    def possibly_active(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs with an active instance now."""
        found = self.store.active_by_keys(pairs)
        return [pair for pair in pairs if pair in found]

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The filter a sync answers with: `possibly_active`."""
        return self.possibly_active(pairs)

    def keys(self, definition_id: str, keys: Collection[str]) -> list[str]:
        """The keys, of these of one definition, with an active instance now."""
        return [key for _, key in self.possibly_active([(definition_id, key) for key in keys])]

    def close(self) -> None:
        """Nothing to release."""
