"""Durations as definitions write them: `30s`, `1h30m`, `500ms`, plain seconds or ISO-8601."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_NUMBER = r"\d+(?:\.\d+)?"
_UNIT_SECONDS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = tuple(_UNIT_SECONDS)
_COMPACT = re.compile(rf"(?:\s*{_NUMBER}\s*(?:ms|[dhms]))+\s*")
_COMPACT_PART = re.compile(rf"({_NUMBER})\s*(ms|[dhms])")
_ISO_NUMBER = r"\d+(?:[.,]\d+)?"
_ISO = re.compile(
    rf"P(?:(?P<weeks>{_ISO_NUMBER})W)?(?:(?P<days>{_ISO_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_ISO_NUMBER})H)?(?:(?P<minutes>{_ISO_NUMBER})M)?"
    rf"(?:(?P<seconds>{_ISO_NUMBER})S)?)?",
    re.IGNORECASE,
)


def parse_duration(text: str | int | float) -> timedelta:
    """Read a duration.

    Args:
        text: `30s`, `5m`, `2h`, `1d`, `500ms`, combined `1h30m`; a plain number of
            seconds (`90`, `"1.5"`); or ISO-8601 (`PT5M`, `P1DT2H`, `PT0.5S`).

    Returns:
        The duration; never negative.

    Raises:
        ValueError: the text is empty, negative, or not one of the forms above.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"a duration must be text or a number of seconds, not {text!r}")
    if isinstance(text, (int, float)):
        return _from_seconds(float(text), text)
    stripped = text.strip()
    if not stripped:
        raise ValueError("a duration must not be empty (examples: 30s, 5m, 1h30m, PT5M)")
    if stripped[0] in "+-":
        raise ValueError(f"duration {text!r} must not be signed")
    if re.fullmatch(_NUMBER, stripped):
        return _from_seconds(float(stripped), text)
    if stripped[0] in "pP":
        return _from_iso(stripped, text)
    return _from_compact(stripped, text)


def _from_seconds(seconds: float, original: object) -> timedelta:
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"duration {original!r} is not a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"duration {original!r} must not be negative")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {original!r} is too long") from None


def _from_compact(text: str, original: str) -> timedelta:
    """`1h30m`-style: numbers with units, largest unit first, each unit once."""
    if not _COMPACT.fullmatch(text):
        raise ValueError(
            f"duration {original!r} is not understood; use a number with a unit "
            "(ms, s, m, h, d) such as 30s or 1h30m, or ISO-8601 such as PT5M"
        )
    parts = _COMPACT_PART.findall(text)
    positions = [_UNIT_ORDER.index(unit) for _, unit in parts]
    if positions != sorted(set(positions)):
        raise ValueError(f"duration {original!r} must list each unit once, largest first")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return _from_seconds(seconds, original)


def _from_iso(text: str, original: str) -> timedelta:
    """ISO-8601 `PnWnDTnHnMnS`; years and months are refused, having no fixed length."""
    match = _ISO.fullmatch(text)
    if not match or not any(match.groupdict().values()) or text.upper().endswith("T"):
        if re.search(r"\d[YM]", text.upper().split("T")[0]):
            raise ValueError(f"duration {original!r}: years and months have no fixed length")
        raise ValueError(f"duration {original!r} is not ISO-8601 (e.g. PT5M, P1DT2H, PT0.5S)")
    found = {unit: value for unit, value in match.groupdict().items() if value}
    amounts = {unit: float(value.replace(",", ".")) for unit, value in found.items()}
    try:
        return timedelta(**amounts)
    except OverflowError:
        raise ValueError(f"duration {original!r} is too long") from None
