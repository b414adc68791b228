"""deploy/grafana/ and deploy/prometheus/, checked without Grafana: what they refer to must exist.

The dashboard's SQL is run against real databases by tests/integration/test_grafana_dashboard.py;
here its data sources, macros, variables and Prometheus metric names are held to the
provisioning files, docker-compose.yml and the engine's metrics.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from process_engine.adapters.observability.metrics import EngineMetrics
from tests import dashboard

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = dashboard.GRAFANA / "provisioning"
_METRIC = re.compile(r"\bprocess_engine_\w+")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_VARIABLE = re.compile(r"\$(?!__)(\w+)")


def yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    return {source["uid"]: source for source in yaml(PROVISIONING / "datasources" / "process-engine.yaml")["datasources"]}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dashboard.load()


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts."""
    found = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def engine_metrics() -> dict[str, set[str]]:
    """Every sample name the engine exposes, with its label names (each labelled metric touched once)."""
    metrics = EngineMetrics()
    for metric in vars(metrics).values():
        if isinstance(metric, (Counter, Gauge, Histogram)) and metric._labelnames:  # no public accessor
            metric.labels(*["x"] * len(metric._labelnames))
    exposition = metrics.exposition().decode()
    return {sample.name: set(sample.labels) for family in text_string_to_metric_families(exposition)
            for sample in family.samples}


def test_compose_provisions_grafana_with_these_files(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana-oss:")
    bound = mounts(grafana)
    assert bound["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml(PROVISIONING / "dashboards" / "process-engine.yaml")["providers"][0]
    assert bound[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert ROOT / bound[str(Path(home).parent)] / Path(home).name == dashboard.DASHBOARD
    assert {"timescaledb", "prometheus"} <= set(grafana["depends_on"])
    assert "grafana-data:/var/lib/grafana" in grafana["volumes"]


def test_the_database_source_is_the_compose_timescaledb(compose: dict[str, Any], datasources: dict[str, Any]) -> None:
    [database] = [source for source in datasources.values() if source["type"] == "grafana-postgresql-datasource"]
    timescale = compose["services"]["timescaledb"]["environment"]
    assert database["url"] == "timescaledb:5432" and database["user"] == timescale["POSTGRES_USER"]
    assert database["jsonData"]["database"] == timescale["POSTGRES_DB"]
    assert database["jsonData"]["timescaledb"] is True
    # Grafana expands ${POSTGRES_PASSWORD} from its own environment, which compose sets.
    assert database["secureJsonData"]["password"] == "${POSTGRES_PASSWORD}"
    grafana_environment = compose["services"]["grafana"]["environment"]
    assert grafana_environment["POSTGRES_PASSWORD"] == compose["services"]["timescaledb"]["environment"]["POSTGRES_PASSWORD"]


def test_the_prometheus_source_scrapes_the_engine(compose: dict[str, Any], datasources: dict[str, Any]) -> None:
    [prometheus] = [source for source in datasources.values() if source["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    service = compose["services"]["prometheus"]
    config = yaml(ROOT / mounts(service)["/etc/prometheus/prometheus.yml"])
    [job] = config["scrape_configs"]
    engine_port = compose["services"]["engine"]["ports"][0].split(":")[1]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == [f"engine:{engine_port}"]


def test_every_query_uses_a_provisioned_source_of_its_kind(board: dict[str, Any], datasources: dict[str, Any]) -> None:
    for query in dashboard.queries(board):
        assert query.datasource in datasources, query.where
        kind = datasources[query.datasource]["type"]
        is_sql = query.text.lstrip().upper().startswith("SELECT")
        assert is_sql == (kind == "grafana-postgresql-datasource"), query.where
    for panel in dashboard.panels(board):
        assert panel["datasource"]["uid"] in datasources, panel["title"]


def test_sql_uses_only_macros_the_suite_expands_and_declared_variables(board: dict[str, Any]) -> None:
    variables = {variable["name"] for variable in board["templating"]["list"]}
    sql = [query for query in dashboard.queries(board) if query.text.lstrip().upper().startswith("SELECT")]
    assert len(sql) >= 10
    for query in sql:
        assert dashboard.macros(query.text) <= dashboard.MACROS, query.where
        assert set(_VARIABLE.findall(query.text)) <= variables, query.where


def test_prometheus_panels_ask_for_metrics_and_labels_the_engine_exports(board: dict[str, Any]) -> None:
    exported = engine_metrics()
    exprs = [query for query in dashboard.queries(board) if not query.text.lstrip().upper().startswith("SELECT")]
    assert exprs
    for query in exprs:
        names = set(_METRIC.findall(query.text))
        assert names and names <= set(exported), f"{query.where}: {names - set(exported)}"
        labels = set().union(*(exported[name] for name in names))
        for grouping in _BY.findall(query.text):
            assert {label.strip() for label in grouping.split(",")} <= labels, query.where


def test_the_panels_answer_a_plant_engineers_questions(board: dict[str, Any]) -> None:
    text = "\n".join(query.text for query in dashboard.queries(board))
    for needed in ("event_type = 'started'", "event_type = 'process_completed'", "event_type = 'failed'",
                   "process_activity_stats", "process_activity_visits", "process_instance_durations",
                   "process_engine_timer_lateness_seconds_bucket", "'timer_scheduled'", "FROM dead_letters",
                   "event_type = 'action_failed'", "process_engine_action_failures_total"):
        assert needed in text, needed


def test_panels_have_unique_ids_and_fit_the_grid(board: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert board["uid"] == "process-engine" and board["time"] == {"from": "now-24h", "to": "now"}
