"""Every SQL query of the Grafana dashboard, run over what a real engine wrote: on TimescaleDB and on plain PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from process_engine.ports import InstanceQuery
from tests import dashboard
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import engine_settings, running_engine, unique

pytestmark = pytest.mark.integration

# An alert per hot reading, then a settling timer. A device id with `+` cannot be an
# MQTT topic level: that publish fails and so does its instance.
LINE_CHECK = """
id: line-check
name: Line check
trigger:
  type: kafka
  topic: {topic}
  condition: fields.temp > 25
  correlate: tags.device_id
variables:
  - {{name: device_id, source: tags.device_id}}
  - {{name: temp, source: fields.temp}}
activities:
  - {{id: start, type: start}}
  - id: alert
    type: service
    action: mqtt_publish
    config: {{topic: "{mqtt}/${{device_id}}/alert", payload: {{temp: "${{temp}}"}}}}
  - {{id: settle, type: timer, duration: 1s}}
  - {{id: done, type: end}}
"""


def reading(device: str, temp: float) -> dict[str, object]:
    return {"tags": {"device_id": device}, "fields": {"temp": temp}}


def statuses(store) -> dict[str, str]:
    return {i.variables["device_id"]: i.status for i in store.find_instances(InstanceQuery(limit=10))}


@pytest.fixture(params=["timescaledb", "plain"])
def flavour(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """(database URL, whether Grafana's data source has TimescaleDB on)."""
    return request.getfixturevalue(f"{request.param}_database_url"), request.param == "timescaledb"


def test_every_sql_query_of_the_dashboard_answers_over_a_real_engine_run(
    flavour: tuple[str, bool], kafka_bootstrap: str, mqtt_url: str, tmp_path: Path
) -> None:
    database_url, timescaledb = flavour
    topic = unique("line")
    (tmp_path / "line-check.yaml").write_text(LINE_CHECK.format(topic=topic, mqtt=unique("plant")))
    create_topic(kafka_bootstrap, topic)
    settings = engine_settings(database_url, kafka_bootstrap, mqtt_url, tmp_path, unique("g"))
    with running_engine(settings) as engine:
        produce_json(kafka_bootstrap, topic, [reading("ok-1", 31.0), reading("bad+1", 32.0), b"{not json"])
        wanted = {"ok-1": "completed", "bad+1": "failed"}
        wait_until(lambda: statuses(engine.store) == wanted, 30, "one instance completed and one failed")
        assert len(engine.store.dead_letters()) == 1
    start = datetime.now(timezone.utc) - timedelta(days=1)
    end = datetime.now(timezone.utc) + timedelta(minutes=1)
    sql = [query for query in dashboard.queries(dashboard.load()) if query.text.lstrip().upper().startswith("SELECT")]
    with psycopg.connect(database_url) as conn:
        definitions = [row[0] for row in conn.execute("SELECT DISTINCT id FROM process_definitions")]
        for query in sql:
            text = dashboard.expand(query.text, start, end, {"definition": definitions}, timescaledb)
            assert conn.execute(text).fetchall(), f"{query.where} returned no rows:\n{text}"
