"""Drive the walker through scenarios, optionally round-tripping the instance through JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from process_engine.adapters.definitions.yaml_loader import load_file, load_text
from process_engine.app import definition_extensions
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.instance import InstanceState
from process_engine.engine import RunAction, ScheduleTimer, advance
from process_engine.engine.commands import Command, RecordHistory

PROCESSES = Path(__file__).resolve().parents[2] / "processes"
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def definition_from(text: str) -> ProcessDefinition:
    """Load a definition from YAML text."""
    return load_text(text, "test.yaml", definition_extensions())


def example(name: str) -> ProcessDefinition:
    """Load one of the shipped examples."""
    return load_file(PROCESSES / name, definition_extensions())


def restore(instance: InstanceState) -> InstanceState:
    """Serialise the instance as a store would and read it back."""
    row = {
        "id": instance.id,
        "definition_id": instance.definition_id,
        "definition_version": instance.definition_version,
        "status": instance.status,
        "variables": instance.variables,
        "state": instance.to_json(),
        "correlation_key": instance.correlation_key,
        "version": instance.version,
    }
    row = json.loads(json.dumps(row))
    return InstanceState.from_row(**row, started_at=instance.started_at, completed_at=instance.completed_at)


class Scenario:
    """One instance walked event by event, with a clock the test moves."""

    def __init__(self, definition: ProcessDefinition, round_trip: bool):
        self.definition = definition
        self.round_trip = round_trip
        self.now = T0
        self.instance: InstanceState | None = None
        self.commands: list[Command] = []
        self.all_commands: list[Command] = []

    def send(self, event) -> list[Command]:
        """Apply an event at the current time."""
        if self.instance is not None and self.round_trip:
            self.instance = restore(self.instance)
        self.instance, self.commands = advance(self.definition, self.instance, event, self.now)
        self.all_commands.extend(self.commands)
        return self.commands

    def wait(self, **delta: float) -> None:
        """Move the clock on."""
        self.now += timedelta(**delta)

    def of(self, kind: type) -> list:
        """Commands of one type from the last step."""
        return [c for c in self.commands if isinstance(c, kind)]

    def action(self) -> RunAction:
        """The single action the last step asked for."""
        (action,) = self.of(RunAction)
        return action

    def timer(self) -> ScheduleTimer:
        """The single timer the last step scheduled."""
        (timer,) = self.of(ScheduleTimer)
        return timer

    def visited(self) -> list[str]:
        """Activities recorded as completed, in order, over the whole scenario."""
        return [c.activity_id for c in self.all_commands if isinstance(c, RecordHistory) and c.event_type == "completed"]
