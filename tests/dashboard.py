"""The Grafana dashboard of deploy/grafana/ as tests read it: its queries, and its SQL with Grafana's macros expanded.

The expansion follows Grafana's PostgreSQL data source: `$__timeFilter(column)` becomes
a BETWEEN over the dashboard's time range, `$__timeGroupAlias(column, interval)` a
`time_bucket` (TimescaleDB on) or epoch arithmetic (off) named "time", `$__interval`
the interval Grafana picks for the range, and a multi-value variable the quoted list
of its values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "process-engine.json"
MACROS = {"$__timeFilter", "$__timeGroupAlias", "$__interval"}
_MACRO = re.compile(r"\$__\w+")
_TIME_FILTER = re.compile(r"\$__timeFilter\(([^)]+)\)")
_TIME_GROUP = re.compile(r"\$__timeGroupAlias\(([^,]+),\s*'?(\w+)'?\)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Query:
    """One query of the dashboard: a panel's target, or a template variable's query."""

    where: str  # "panel 3 (Instances started per hour)" or "variable definition"
    datasource: str  # uid
    text: str  # rawSql or expr


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel but rows, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    """Every query the dashboard runs."""
    found = [Query(f"variable {variable['name']}", variable["datasource"]["uid"], variable["query"])
             for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    for panel in panels(dashboard):
        for target in panel["targets"]:
            uid = target.get("datasource", panel["datasource"])["uid"]
            found.append(Query(f"panel {panel['id']} ({panel['title']})", uid, target.get("rawSql") or target["expr"]))
    return found


def macros(sql: str) -> set[str]:
    """The Grafana macros a query uses."""
    return set(_MACRO.findall(sql))


def seconds(interval: str) -> int:
    """'5m' -> 300."""
    number, unit = re.fullmatch(r"(\d+)([smhd])", interval).groups()
    return int(number) * _UNITS[unit]


def expand(sql: str, start: datetime, end: datetime, variables: Mapping[str, Sequence[str]],
           timescaledb: bool, interval: str = "1m") -> str:
    """The SQL Grafana would send for this time range and these variable values."""
    sql = sql.replace("$__interval", interval)
    sql = _TIME_FILTER.sub(lambda m: f"{m[1].strip()} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'", sql)

    def group(match: re.Match[str]) -> str:
        column, step = match[1].strip(), seconds(match[2])
        if timescaledb:
            return f"time_bucket('{step}s', {column}) AS \"time\""
        return f"floor(extract(epoch from {column})/{step})*{step} AS \"time\""

    sql = _TIME_GROUP.sub(group, sql)
    for name, values in variables.items():
        sql = sql.replace(f"${name}", ",".join("'" + value.replace("'", "''") + "'" for value in values))
    return sql
