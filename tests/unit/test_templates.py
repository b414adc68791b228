"""Config templates: interpolation, type-keeping references, recursion, escapes, errors."""

from __future__ import annotations

import pytest

from process_engine.domain.errors import ExpressionError
from process_engine.domain.templates import compile_template


def render(value, variables):
    return compile_template(value).render(variables)


def test_strings_are_interpolated():
    text = "Temperature normal: ${temperature}°C"
    assert render(text, {"temperature": 22.5}) == "Temperature normal: 22.5°C"


def test_a_lone_reference_keeps_the_type():
    assert render("${temperature}", {"temperature": 26.5}) == 26.5
    assert render("${device}", {"device": {"id": "hp-1"}}) == {"id": "hp-1"}
    assert render("${flag}", {"flag": False}) is False


def test_structures_are_rendered_recursively():
    config = {
        "topic": "devices/${device_id}/commands",
        "payload": {"setpoint": "${target}", "tags": ["${device_id}", 3, None]},
        "qos": 1,
    }
    template = compile_template(config)
    assert template.names == frozenset({"device_id", "target"})
    assert template.render({"device_id": "hp-1", "target": 21}) == {
        "topic": "devices/hp-1/commands",
        "payload": {"setpoint": 21, "tags": ["hp-1", 3, None]},
        "qos": 1,
    }


def test_non_strings_pass_through():
    assert render(5, {}) == 5
    assert render(None, {}) is None
    assert render(("a", "${x}"), {"x": 1}) == ("a", 1)


def test_dotted_paths_walk_dicts_and_lists():
    variables = {"device": {"id": "hp-1", "sensors": [{"name": "flow"}]}}
    assert render("${device.id}", variables) == "hp-1"
    assert render("sensor ${device.sensors.0.name}", variables) == "sensor flow"
    assert compile_template("${device.id}").names == frozenset({"device"})


def test_dollar_dollar_brace_escapes_a_literal_reference():
    assert render("cost $${price} is ${price}", {"price": 3}) == "cost ${price} is 3"
    assert render("$${x}", {}) == "${x}"


def test_structures_and_booleans_interpolate_as_json():
    variables = {"data": {"a": [1, True]}, "flag": True, "nothing": None}
    assert render("d=${data} f=${flag} n=${nothing}", variables) == (
        'd={"a": [1, true]} f=true n=null'
    )


def test_missing_variable_names_it():
    with pytest.raises(ExpressionError, match="'temperature' is not defined"):
        render("t=${temperature}", {})


def test_missing_key_names_the_path():
    with pytest.raises(ExpressionError, match="'device' has no key 'id'"):
        render("${device.id}", {"device": {}})
    with pytest.raises(ExpressionError, match="has no index 3"):
        render("${items.3}", {"items": []})
    with pytest.raises(ExpressionError, match="is of type int"):
        render("${count.x}", {"count": 1})


@pytest.mark.parametrize("text", ["${", "a ${b", "${}", "${a..b}"])
def test_malformed_references_are_rejected_at_compile_time(text):
    with pytest.raises(ExpressionError, match="template"):
        compile_template(text)


def test_render_returns_fresh_structures():
    template = compile_template({"list": [1], "inner": {"a": 1}})
    first = template.render({})
    first["list"].append(2)
    first["inner"]["b"] = 2
    assert template.render({}) == {"list": [1], "inner": {"a": 1}}


def test_keys_are_interpolated_too():
    assert render({"${name}": "${value}"}, {"name": "k", "value": 1}) == {"k": 1}
