"""The window part of the trigger-state contract: window buckets saved, loaded, updated, on both stores."""

from __future__ import annotations

from dataclasses import replace

import pytest

from process_engine.domain.trigger_state import TriggerState
from process_engine.ports import HoldWrite, InstanceStore
from tests.contract.test_instance_store import T0, store  # noqa: F401 (fixture)

BUCKETS = {"avg_temp": {"w": 5000, "b": [[1, 2, 41.5, 20, 21.5, 1000, 20, 1900, 21.5], [2, 1, -3, -3, -3, 2500, -3, 2500, -3]]}}


def test_window_state_round_trips_and_updates(store: InstanceStore) -> None:
    state = TriggerState("flow", "fz-1", "", 1, windows=BUCKETS)
    store.commit([], holds=[HoldWrite("flow", "fz-1", state, 0)])
    loaded = store.load_trigger_states([("flow", "fz-1")])[("flow", "fz-1")]
    assert loaded == replace(state, version=1)
    fewer = {"avg_temp": {"w": 5000, "b": BUCKETS["avg_temp"]["b"][1:]}}
    store.commit([], holds=[HoldWrite("flow", "fz-1", replace(loaded, windows=fewer), 1)])
    assert store.load_trigger_states([("flow", "fz-1")])[("flow", "fz-1")].windows == fewer


def test_a_state_with_only_windows_is_not_empty_and_big_numbers_survive(store: InstanceStore) -> None:
    windows = {"total": {"w": 1000, "b": [[7, 3, 1.5e300, -1e-9, 1e300, 7000, 0.1, 7999, 2**53]]}}
    state = TriggerState("flow", "fz-2", "", 1, windows=windows)
    assert not state.is_empty(T0)
    store.commit([], holds=[HoldWrite("flow", "fz-2", state, 0)])
    loaded = store.load_trigger_states([("flow", "fz-2")])[("flow", "fz-2")].windows
    # jsonb keeps a number's decimal text: 1.5e300 comes back as that exact integer, within an ulp of the float.
    assert loaded["total"]["b"][0] == pytest.approx(windows["total"]["b"][0], rel=1e-15)
    assert loaded["total"]["w"] == 1000
