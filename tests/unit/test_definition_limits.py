"""Hostile definition files: each is that file's file:line error; validate, the loader and the hot reload go on."""

from __future__ import annotations

import json
import logging
import os
import resource
import threading
import time
from pathlib import Path

import pytest

from process_engine.adapters.definitions import yaml_loader
from process_engine.adapters.definitions.folder import DefinitionFolder
from process_engine.adapters.memory.store import MemoryInstanceStore
from process_engine.app import definition_extensions
from process_engine.cli import main
from process_engine.runtime.registry import DefinitionRegistry

GOOD = """id: {id}
trigger: {{type: api}}
activities:
  - {{id: start, type: start}}
  - id: check
    type: decision
    condition: {condition}
    true_path: done
    false_path: done
  - {{id: done, type: end}}
"""
BILLION_LAUGHS = "\n".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{level}: &a{level} [{','.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 7)]
    + ["id: bomb", "trigger: {type: api}", "activities: [{id: start, type: start}, {id: done, type: end}]", ""]
)


def good(definition_id: str = "good", condition: str = "True") -> str:
    return GOOD.format(id=definition_id, condition=json.dumps(condition))


def validate(tmp_path: Path, capsys, name: str, text: str) -> str:
    """Run `process-engine validate` on one file; return what it printed to stderr."""
    path = tmp_path / name
    path.write_text(text)
    assert main(["validate", str(path)]) == 1
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err + printed.out
    return printed.err


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("x" + "+x" * 4900, "expression is longer than 4 KiB (9,801 bytes; the limit is 4,096)"),
        ("not " * 2400 + "x", "expression is longer than 4 KiB"),
        ("x" + "+x" * 2000, "is nested deeper than 50 levels (the limit)"),
        ("not " * 1000 + "x", "is nested deeper than 50 levels (the limit)"),
        ("(" * 250 + "x" + ")" * 250, "has a syntax error: too many nested parentheses"),
        ("-" * 4000 + "1", "is nested deeper than 50 levels (the limit)"),
        ("[" * 60 + "]" * 60, "is nested deeper than 50 levels (the limit)"),
    ],
)
def test_expressions_that_crashed_the_parser_are_the_files_error(tmp_path, capsys, condition, reason) -> None:
    err = validate(tmp_path, capsys, "deep.yaml", good("deep", condition))
    assert f"{tmp_path / 'deep.yaml'}:7: bad expression: " in err
    assert reason in err


def test_an_expression_nested_50_deep_is_fine() -> None:
    text = good("ok", "x" + "+x" * 49).replace("activities:", "variables: [{name: x, value: 1}]\nactivities:")
    assert yaml_loader.load_text(text, "ok.yaml").id == "ok"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("id: !!str [a]\n" + good().split("\n", 1)[1], 1, "YAML tags (!!str) are not allowed: write plain values"),
        (good().replace("trigger: {type: api}", "trigger: !!omap [type: api]"), 2, "YAML tags (!!omap) are not allowed"),
        (good().replace("id: good", "id: !custom good"), 1, "YAML tags (!custom) are not allowed"),
        (good().replace("id: good", "id: !!python/object:os.system good"), 1, "YAML tags (!!python/object:os.system)"),
        ("base: &base {type: api}\n" + good(), 1, "YAML anchors (&base) are not allowed: write the value out"),
        (good().replace("trigger: {type: api}", "trigger: *nowhere"), 2, "YAML aliases (*nowhere) are not allowed"),
        (BILLION_LAUGHS, 1, "YAML anchors (&a0) are not allowed"),
        ("x: " + "[" * 70 + "]" * 70 + "\n" + good(), 1, "YAML nested deeper than 64 levels (the limit)"),
    ],
)
def test_yaml_aliases_anchors_tags_and_depth_are_refused_at_their_line(tmp_path, capsys, text, line, reason) -> None:
    err = validate(tmp_path, capsys, "refused.yaml", text)
    assert f"{tmp_path / 'refused.yaml'}:{line}: {reason}" in err


def test_the_billion_laughs_is_refused_before_any_expansion(tmp_path, capsys) -> None:
    assert len(BILLION_LAUGHS) < 500
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.process_time()
    err = validate(tmp_path, capsys, "bomb.yaml", BILLION_LAUGHS)
    assert "YAML anchors (&a0) are not allowed" in err
    assert time.process_time() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was expanded


def test_a_file_over_1_mib_is_refused_unread(tmp_path, capsys) -> None:
    text = good() + "# " + "x" * (1024 * 1024) + "\n"
    err = validate(tmp_path, capsys, "big.yaml", text)
    assert f"{tmp_path / 'big.yaml'}:1: file is larger than 1 MiB (the limit is 1,048,576 bytes)" in err


def test_more_than_1000_activities_is_refused(tmp_path, capsys) -> None:
    middle = "".join(f"  - {{id: a{i}, type: set, set: {{n: '{i}'}}}}\n" for i in range(1000))
    text = "id: many\ntrigger: {type: api}\nactivities:\n  - {id: start, type: start}\n" + middle + "  - {id: done, type: end}\n"
    err = validate(tmp_path, capsys, "many.yaml", text)
    assert f"{tmp_path / 'many.yaml'}:3: 1,002 activities: a definition may have at most 1,000" in err


def test_a_jsonpath_regex_filter_is_refused_at_load(tmp_path, capsys) -> None:
    text = good().replace("activities:", "variables:\n  - {name: v, source: \"$.items[?(@.name =~ '^(a+)+$')]\"}\nactivities:")
    err = validate(tmp_path, capsys, "regex.yaml", text)
    assert f"{tmp_path / 'regex.yaml'}:4: bad JSONPath" in err
    assert "uses a regular expression (=~ or sub()), which is not supported" in err


def test_any_other_failure_is_the_files_error_naming_the_type(tmp_path, capsys, monkeypatch) -> None:
    def explode(*args, **kwargs):
        raise OverflowError("something nobody foresaw")

    monkeypatch.setattr(yaml_loader, "build_definition", explode)
    err = validate(tmp_path, capsys, "odd.yaml", good())
    assert f"{tmp_path / 'odd.yaml'}:1: cannot load the definition: OverflowError: something nobody foresaw" in err


def test_validate_reports_every_bad_file_and_checks_the_good_ones(tmp_path, capsys) -> None:
    (tmp_path / "a_bomb.yaml").write_text(BILLION_LAUGHS)
    (tmp_path / "b_deep.yaml").write_text(good("deep", "not " * 1000 + "x"))
    (tmp_path / "c_tag.yaml").write_text("id: !!str [a]\n")
    (tmp_path / "d_good.yaml").write_text(good())
    assert main(["validate", str(tmp_path)]) == 1
    printed = capsys.readouterr()
    assert "a_bomb.yaml:1:" in printed.err and "b_deep.yaml:7:" in printed.err and "c_tag.yaml:1:" in printed.err
    assert f"ok  {tmp_path / 'd_good.yaml'}  (good)" in printed.out
    assert "4 file(s) checked, 3 error(s)" in printed.out


def folder_of(path: Path) -> tuple[DefinitionFolder, DefinitionRegistry]:
    registry = DefinitionRegistry(MemoryInstanceStore())
    return DefinitionFolder(path, registry, definition_extensions()), registry


def touch_later(path: Path, text: str) -> None:
    """Rewrite a file so its stamp changes even on a coarse-mtime file system."""
    stamp = path.stat().st_mtime if path.exists() else time.time()
    path.write_text(text)
    os.utime(path, (stamp + 5, stamp + 5))


def test_the_folder_scan_goes_past_a_bad_file_and_loads_a_new_good_one(tmp_path, caplog) -> None:
    (tmp_path / "bad.yaml").write_text("id: !!str [a]\n")
    (tmp_path / "first.yaml").write_text(good("first"))
    folder, registry = folder_of(tmp_path)
    with caplog.at_level(logging.ERROR, "process_engine.definitions"):
        assert folder.scan()
    assert [d.id for d in registry.active()] == ["first"]
    assert "bad.yaml:1: YAML tags (!!str) are not allowed" in caplog.text
    (tmp_path / "second.yaml").write_text(good("second"))
    assert folder.scan()
    assert sorted(d.id for d in registry.active()) == ["first", "second"]
    assert [error.file for error in folder.errors()] == [str(tmp_path / "bad.yaml")]
    assert not folder.scan()  # stamps were saved: the bad file is not read again until it changes


def test_a_scan_survives_a_failure_outside_the_loader(tmp_path, monkeypatch) -> None:
    (tmp_path / "bad.yaml").write_text(good("bad"))
    (tmp_path / "good.yaml").write_text(good("good"))
    folder, registry = folder_of(tmp_path)
    load = folder._load

    def load_or_fail(path: Path):
        if path.name == "bad.yaml":
            raise RecursionError("deep")
        return load(path)

    monkeypatch.setattr(folder, "_load", load_or_fail)
    assert folder.scan()
    assert [d.id for d in registry.active()] == ["good"]
    assert "cannot load the definition: RecursionError: deep" in folder.errors()[0].reason


def test_the_hot_reload_keeps_the_previous_version_when_a_file_turns_bad(tmp_path, caplog) -> None:
    path = tmp_path / "watched.yaml"
    path.write_text(good("watched", "1 > 0"))
    folder, registry = folder_of(tmp_path)
    folder.scan()
    (before,) = registry.active()
    changed = threading.Event()
    stop = threading.Event()
    watcher = threading.Thread(target=folder.watch, args=(stop, 0.01, changed.set), daemon=True)
    watcher.start()
    try:
        with caplog.at_level(logging.ERROR, "process_engine.definitions"):
            touch_later(path, good("watched", "x" + "+x" * 2000))
            assert changed.wait(10)
        assert registry.active() == [before]
        assert "previous version stays active" in caplog.text and "nested deeper than 50 levels" in caplog.text
        changed.clear()
        touch_later(tmp_path / "another.yaml", good("another"))
        assert changed.wait(10)
        assert sorted(d.id for d in registry.active()) == ["another", "watched"]
    finally:
        stop.set()
        watcher.join(5)
