"""Custom activity types plug in through entry points and run inside the walker."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from process_engine.adapters.definitions.yaml_loader import load_text
from process_engine.app import custom_activity_types, definition_extensions
from process_engine.domain.errors import ConfigError, DefinitionErrors
from process_engine.engine import Start
from tests.unit.walking import Scenario


class ComputeCop:
    """Coefficient of performance from heat out and power in."""

    def validate(self, options):
        return [] if "heat" in options and "power" in options else ["compute_cop needs 'heat' and 'power'"]

    def execute(self, options, variables):
        return {"cop": round(variables[options["heat"]] / variables[options["power"]], 2)}


class Broken:
    def execute(self, options, variables):
        raise RuntimeError("sensor table missing")


DEFINITION = """
id: cop
trigger: {type: api}
variables:
  - {name: heat_kw, value: 9.0}
  - {name: power_kw, value: 3.0}
activities:
  - {id: start, type: start}
  - {id: cop, type: TYPE, heat: heat_kw, power: power_kw}
  - {id: done, type: end}
"""


@pytest.fixture
def plugin_module():
    module = types.ModuleType("acme_cop")
    module.ComputeCop, module.Broken = ComputeCop, Broken
    sys.modules["acme_cop"] = module
    yield module
    del sys.modules["acme_cop"]


def entry_point(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, value, "process_engine.activities")


def extensions_with(found: dict):
    extensions = definition_extensions()
    extensions.activity_types = found
    return extensions


def test_an_entry_point_activity_runs_in_the_walker(plugin_module) -> None:
    found = custom_activity_types([entry_point("compute_cop", "acme_cop:ComputeCop")])
    definition = load_text(DEFINITION.replace("TYPE", "compute_cop"), "cop.yaml", extensions_with(found))
    flow = Scenario(definition, round_trip=True)
    flow.send(Start("c-1"))
    assert flow.instance.status == "completed"
    assert flow.instance.variables["cop"] == 3.0
    assert flow.visited() == ["start", "cop", "done"]


def test_its_validate_rejects_a_definition_at_load(plugin_module) -> None:
    found = custom_activity_types([entry_point("compute_cop", "acme_cop:ComputeCop")])
    text = DEFINITION.replace("TYPE", "compute_cop").replace(", heat: heat_kw", "")
    with pytest.raises(DefinitionErrors) as caught:
        load_text(text, "cop.yaml", extensions_with(found))
    [error] = caught.value.errors
    assert (error.line, error.reason) == (9, "compute_cop needs 'heat' and 'power'")


def test_a_plug_in_that_raises_fails_its_instance_not_the_engine(plugin_module) -> None:
    found = custom_activity_types([entry_point("broken", "acme_cop:Broken")])
    flow = Scenario(load_text(DEFINITION.replace("TYPE", "broken"), "cop.yaml", extensions_with(found)), round_trip=False)
    flow.send(Start("c-2"))
    assert flow.instance.status == "failed"
    assert "sensor table missing" in flow.instance.error


def test_an_entry_point_that_fails_to_load_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="activity type nope = no_such_module:Thing failed to load"):
        custom_activity_types([entry_point("nope", "no_such_module:Thing")])
