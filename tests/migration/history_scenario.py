"""History written by the real walker, dispatcher and store on a clock the test moves: what the views read."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from process_engine.adapters.definitions.yaml_loader import load_file, load_text
from process_engine.adapters.postgres import PostgresInstanceStore
from process_engine.app import definition_extensions
from process_engine.engine import ActionFailed, ActionSucceeded
from process_engine.ports import IncomingMessage, MessageCoordinate
from process_engine.runtime.dispatcher import Dispatcher
from process_engine.runtime.registry import DefinitionRegistry

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "processes" / "temperature-control.yaml"
README = ROOT / "README.md"
# A command, a settling timer and a check; a command that fails goes on to `report`.
PUMP_CHECK = """
id: pump-check
name: Pump check
trigger: {type: api}
variables:
  - {name: pressure, value: 3}
activities:
  - {id: start, type: start}
  - id: command
    type: service
    action: mqtt_publish
    config: {topic: pumps/p1, payload: "on"}
    on_error: report
  - {id: settle, type: timer, duration: 1m}
  - {id: check, type: decision, condition: "${pressure} > 2", true_path: done, false_path: report}
  - {id: report, type: service, action: log, config: {message: pump failed}, next: done}
  - {id: done, type: end}
"""


def hours_ago(hours: int) -> datetime:
    """The start of the hour `hours` before this one: inside a continuous aggregate's refresh window."""
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=hours)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class PlantRun:
    """What `run_plant` did, for the assertions."""

    t0: datetime
    succeeded: str  # pump-check: command 2 s, timer 60 s, completed at t0 + 62 s
    failed: str  # pump-check: command failed after 5 s, `report`, completed at t0 + 5 s
    cooling: str  # temperature-control: cooling activated at t0 + 1 s, waiting on its 5-minute timer
    history_rows: int


def run_plant(database_url: str, t0: datetime) -> PlantRun:
    """Two pump checks, one seed instance left waiting on its timer, and one dead letter, from t0 on."""
    clock = Clock(t0)
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
    extensions = definition_extensions()
    definitions = [load_text(PUMP_CHECK, "pump-check.yaml", extensions), load_file(SEED, extensions)]
    with PostgresInstanceStore.connect(database_url, min_size=1, max_size=2) as store:
        registry = DefinitionRegistry(store)
        registry.activate(definitions)
        inline = {"log": lambda command, instance: None}
        dispatcher = Dispatcher(store, registry, clock=clock, new_id=lambda: next(ids), inline_actions=inline)
        succeeded, failed = dispatcher.start("pump-check", {}).id, dispatcher.start("pump-check", {}).id
        hot = {"tags": {"device_id": "hp-7"}, "fields": {"flow_temp_c": 31.0}}
        batch = [IncomingMessage(MessageCoordinate("heatpump-telemetry", 0, 0), json.dumps(hot).encode()),
                 IncomingMessage(MessageCoordinate("heatpump-telemetry", 0, 1), b"{not json")]
        [cooling] = dispatcher.handle_batch(batch).started
        actions = {action.instance_id: action for action in store.claim_actions(t0, 10, 30)}
        for seconds, instance_id, outcome in (
            (1, cooling, ActionSucceeded),
            (2, succeeded, ActionSucceeded),
            (5, failed, lambda token, attempt: ActionFailed(token, attempt, "broker refused", retriable=False)),
        ):
            clock.now = t0 + timedelta(seconds=seconds)
            action = actions[instance_id]
            dispatcher.action_finished(action, outcome(action.token_id, action.attempt))
        clock.now = t0 + timedelta(seconds=62)
        dispatcher.fire_timers(store.claim_due_timers(clock.now, 10, 30))  # the settle timer only
        assert [store.load(i).status for i in (succeeded, failed, cooling)] == ["completed", "completed", "running"]
        rows = sum(len(store.history(i)) for i in (succeeded, failed, cooling))
    return PlantRun(t0, succeeded, failed, cooling, rows)


def readme_statements(instance_id: str, plain: bool = False) -> list[str]:
    """The statements of the README's first SQL block, for one instance; with `plain`, as plain PostgreSQL needs them."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Reading history with SQL"):]
    block = section[section.index("```sql\n") + len("```sql\n"):]
    block = block[:block.index("```")].replace("'...'", f"'{instance_id}'")
    if plain:  # as the README's comment says
        block = block.replace("time_bucket('1 hour', h.timestamp)", "date_trunc('hour', h.timestamp)")
    return [statement.strip() for statement in block.split(";") if statement.strip()]
