"""Durations: units, combinations, plain seconds, ISO-8601 and clear refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from process_engine.domain.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        (" 0s ", timedelta(0)),
        ("90", timedelta(seconds=90)),
        ("1.5", timedelta(seconds=1.5)),
        (45, timedelta(seconds=45)),
        (0.25, timedelta(milliseconds=250)),
        ("PT5M", timedelta(minutes=5)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("P1W", timedelta(weeks=1)),
        ("P2D", timedelta(days=2)),
        ("PT1H30M15S", timedelta(hours=1, minutes=30, seconds=15)),
        ("pt5m", timedelta(minutes=5)),
    ],
)
def test_valid_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-5s", "signed"),
        ("-5", "signed"),
        (-5, "negative"),
        (-0.5, "negative"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("5x", "not understood"),
        ("s", "not understood"),
        ("30m1h", "largest first"),
        ("1m1m", "largest first"),
        ("P", "not ISO-8601"),
        ("PT", "not ISO-8601"),
        ("P1DT", "not ISO-8601"),
        ("P1M", "years and months"),
        ("P1Y2M", "years and months"),
        ("PT5X", "not ISO-8601"),
        ("999999999999d", "too long"),
        (True, "number of seconds"),
        (None, "number of seconds"),
    ],
)
def test_invalid_durations_are_refused_clearly(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)
