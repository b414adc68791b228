"""JSONPath: optional `$.`, missing paths, many-match paths, parse errors, fast walk parity."""

from __future__ import annotations

import pytest
from jsonpath_ng.ext import parse as parse_jsonpath

from process_engine.domain.errors import ExpressionError
from process_engine.domain.jsonpaths import compile_jsonpath

MESSAGE = {
    "measurement": "heat_pump",
    "fields": {"flow_temp_c": 26.5, "status": None},
    "tags": {"device_id": "hp-1"},
    "readings": [{"value": 1}, {"value": 2}, {"value": 3}],
    "matrix": [[1, 2], [3, 4]],
}


def test_leading_root_is_optional():
    assert compile_jsonpath("tags.device_id").find(MESSAGE) == (True, "hp-1")
    assert compile_jsonpath("$.tags.device_id").find(MESSAGE) == (True, "hp-1")


def test_indexes():
    assert compile_jsonpath("readings[1].value").find(MESSAGE) == (True, 2)
    assert compile_jsonpath("$.matrix[1][0]").find(MESSAGE) == (True, 3)
    assert compile_jsonpath("[0]").find([7, 8]) == (True, 7)


def test_missing_path_is_not_found():
    assert compile_jsonpath("tags.site").find(MESSAGE) == (False, None)
    assert compile_jsonpath("readings[9].value").find(MESSAGE) == (False, None)
    assert compile_jsonpath("tags.device_id.deeper").find(MESSAGE) == (False, None)


def test_a_null_value_is_found():
    assert compile_jsonpath("fields.status").find(MESSAGE) == (True, None)


def test_paths_that_can_match_many_return_lists():
    assert compile_jsonpath("readings[*].value").find(MESSAGE) == (True, [1, 2, 3])
    assert compile_jsonpath("$..value").find(MESSAGE) == (True, [1, 2, 3])
    assert compile_jsonpath("readings[?(@.value > 1)].value").find(MESSAGE) == (True, [2, 3])
    assert compile_jsonpath("readings[0:1].value").find(MESSAGE) == (True, [1])
    assert compile_jsonpath("readings[*].missing").find(MESSAGE) == (False, None)


def test_single_match_paths_through_jsonpath_ng_return_the_value():
    assert compile_jsonpath("readings[-1].value").find(MESSAGE) == (True, 3)
    assert compile_jsonpath("$.'tags'.device_id").find(MESSAGE) == (True, "hp-1")


@pytest.mark.parametrize("text", ["$.[", "tags..", "readings[?(@.value >]", "", "   "])
def test_parse_errors_are_clear(text):
    with pytest.raises(ExpressionError, match="JSONPath"):
        compile_jsonpath(text)


@pytest.mark.parametrize(
    "path",
    [
        "$",
        "$.tags",
        "$.tags.device_id",
        "$.fields.flow_temp_c",
        "$.fields.status",
        "$.fields.status.x",
        "$.tags.site",
        "$.readings[0]",
        "$.readings[2].value",
        "$.readings[3]",
        "$.readings.value",
        "$.matrix[1][1]",
        "$.measurement[0]",
        "$.measurement.x",
        "$.nothing[0]",
    ],
)
@pytest.mark.parametrize(
    "document",
    [MESSAGE, {}, [], None, "text", 5, {"tags": [1]}, {"readings": {"0": 1}}],
)
def test_fast_walk_matches_jsonpath_ng(path, document):
    matches = [match.value for match in parse_jsonpath(path).find(document)]
    expected = (True, matches[0]) if matches else (False, None)
    assert compile_jsonpath(path).find(document) == expected


def test_jsonpaths_compare_by_source():
    assert compile_jsonpath("a.b") == compile_jsonpath("a.b")
    assert compile_jsonpath("a.b") != compile_jsonpath("a.c")


@pytest.mark.parametrize(
    "path",
    ["$.items[?(@.name =~ '^(a+)+$')]", "items[?name =~ '^(a+)+$'].name", "$.name.`sub(/(a+)+$/, b)`"],
)
def test_regular_expressions_are_refused_at_compile_time(path):
    with pytest.raises(ExpressionError, match=r"uses a regular expression \(=~ or sub\(\)\), which is not supported"):
        compile_jsonpath(path)


def test_arithmetic_is_refused_at_compile_time():
    with pytest.raises(ExpressionError, match="uses arithmetic"):
        compile_jsonpath("$.text * $.count")


@pytest.mark.parametrize(
    ("path", "reason"),
    [(".".join(["a"] * 60) + "[*]", "nested deeper than 50 levels"), ("a" + "[*]" * 60, "nested deeper than 50 levels"),
     ("a." * 2100 + "b", "longer than 4 KiB")],
)
def test_long_and_deep_paths_are_refused(path, reason):
    with pytest.raises(ExpressionError, match=reason):
        compile_jsonpath(path)


def test_filters_without_regex_still_work():
    path = compile_jsonpath("$.readings[?(@.value > 1)].value")
    assert path.find({"readings": [{"value": 1}, {"value": 2}, {"value": 3}]}) == (True, [2, 3])
