"""Misspellings caught by `validate`, each with a suggestion and no follow-on errors, asserted as printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from process_engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "processes" / "temperature-control.yaml").read_text(encoding="utf-8")


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def validate(tmp_path: Path, text: str, capsys) -> tuple[int, list[str]]:
    (tmp_path / "rule.yaml").write_text(text, encoding="utf-8")
    code = main(["validate", str(tmp_path)])
    return code, capsys.readouterr().err.splitlines()


CASES = {
    "a variable in a decision": (
        ("condition: ${temperature} > ${threshold}", "condition: ${temprature} > ${threshold}"),
        "unknown variable 'temprature' in decision 'check_temp' (did you mean 'temperature'?)",
    ),
    "a variable in a template": (
        ('message: "Temperature normal: ${temperature}', 'message: "Temperature normal: ${temperatur}'),
        "unknown variable 'temperatur' in service 'log_normal' (did you mean 'temperature'?)",
    ),
    "a message key in the trigger condition": (
        ("    fields.flow_temp_c > 25.0", "    feilds.flow_temp_c > 25.0"),
        "'feilds' in the trigger condition is neither a variable nor a message key the definition reads (did you mean 'fields'?)",
    ),
    "an activity type": (
        ("type: timer", "type: timmer"),
        "activity 'wait_recheck' has unknown type 'timmer' (did you mean 'timer'?) (expected one of",
    ),
    "an action": (
        ("action: mqtt_publish", "action: mqtt_publsh"),
        "unknown action 'mqtt_publsh' (did you mean 'mqtt_publish'?)",
    ),
    "an activity id": (
        ("true_path: activate_cooling", "true_path: activate_coolng"),
        "'true_path' of 'check_temp' points at unknown activity 'activate_coolng' (did you mean 'activate_cooling'?)",
    ),
    "a key of an activity": (
        ("duration: 5m", "duraton: 5m"),
        "unknown key 'duraton' for a timer activity (did you mean 'duration'?)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_misspelling_is_one_error_with_a_suggestion(case: str, tmp_path: Path, capsys) -> None:
    (old, new), reason = CASES[case]
    assert old in SEED, old
    text = SEED.replace(old, new, 1)
    code, errors = validate(tmp_path, text, capsys)
    assert code == 1
    assert len(errors) == 1, errors  # no follow-on "unreachable" errors
    line = line_of(text, new.strip()[:20])
    assert errors[0].startswith(f"{tmp_path}/rule.yaml:")
    assert reason in errors[0], errors[0]
    assert abs(int(errors[0].split(":")[1]) - line) <= 2  # at (or next to) the line that holds it


def test_the_seed_still_validates_clean(tmp_path: Path, capsys) -> None:
    code, errors = validate(tmp_path, SEED, capsys)
    assert (code, errors) == (0, [])
