"""A definition's activity graph as Mermaid flowchart text, made on the server from the definition.

Nothing from the definition file reaches the text unescaped: node ids are generated
(`a0`, `a1`, ...), and every label character but letters, digits and a few plain marks
is written as a Mermaid entity code (`#60;` for `<`). So a hostile activity id, action
name or condition can neither end its label and add nodes, links or directives, nor
bring markup into the drawing (which Mermaid's `securityLevel: 'strict'` sanitises too).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from process_engine.domain.definition import Activity, ProcessDefinition

SAFE_CHARACTERS = frozenset(string.ascii_letters + string.digits + " _-.,:/()=+")
MAX_DETAIL = 80

# Mermaid node shapes (opening, closing) by activity type; a quoted label goes between.
SHAPES: dict[str, tuple[str, str]] = {
    "start": ("([", "])"),
    "end": ("([", "])"),
    "decision": ("{", "}"),
    "timer": ("{{", "}}"),
    "wait": ("[[", "]]"),
    "parallel": ("[/", "\\]"),
    "join": ("[\\", "/]"),
    "set": ("[/", "/]"),
    "compensate": (">", "]"),
}
CLASS_STYLES = {
    "terminal": "fill:#e8eef7,stroke:#51698f",
    "visited": "fill:#d7f0d8,stroke:#2e7d32,stroke-width:3px",
    "current": "fill:#ffe7b3,stroke:#e65100,stroke-width:4px",
    "failed": "fill:#fbd5d5,stroke:#c62828,stroke-width:4px",
    "unvisited": "fill:#f6f6f6,stroke:#b8b8b8,color:#8a8a8a",
}
TAKEN_LINK_STYLE = "stroke:#2e7d32,stroke-width:3px"


@dataclass(frozen=True, slots=True)
class Edge:
    """One arrow of the graph, between activity ids; `label` names a branch (true, on error, ...)."""

    source: str
    target: str
    label: str | None = None
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Highlight:
    """What one instance did on the graph: activities visited, where it is now, arrows it took."""

    visited: frozenset[str] = frozenset()
    current: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()
    taken: frozenset[tuple[str, str]] = frozenset()


def edges(definition: ProcessDefinition) -> list[Edge]:
    """Every arrow of the graph, in activity order: the order Mermaid numbers links in."""
    found: list[Edge] = []
    for activity in definition.activities.values():
        found.extend(edge for edge in _edges_of(activity) if edge.target in definition.activities)
    return found


def _edges_of(activity: Activity) -> Iterable[Edge]:
    kind = activity.type
    if kind == "decision":
        yield from (Edge(activity.id, t, label) for t, label in ((activity.true_path, "true"), (activity.false_path, "false")) if t)
        return
    if kind == "parallel":
        yield from (Edge(activity.id, branch) for branch in activity.branches)
        return
    if kind != "end" and activity.next:
        yield Edge(activity.id, activity.next)
    if activity.on_error:
        yield Edge(activity.id, activity.on_error, "on error", dashed=True)
    if activity.timeout_path:
        yield Edge(activity.id, activity.timeout_path, "timeout", dashed=True)


def flowchart(definition: ProcessDefinition, counts: Mapping[str, int] | None = None, highlight: Highlight | None = None) -> str:
    """The Mermaid text of a definition's graph.

    Args:
        definition: the parsed definition whose activities are drawn.
        counts: when given, each node says how many instances visited it (in 24 hours).
        highlight: when given, an instance's path: visited, current and failed
            activities get their classes, the arrows it took a heavier stroke.

    Returns:
        Text for a `<pre class="mermaid">` element (HTML-escaped by the template).
    """
    node_ids = {activity_id: f"a{index}" for index, activity_id in enumerate(definition.activities)}
    lines = ["flowchart TD"]
    for activity in definition.activities.values():
        opening, closing = SHAPES.get(activity.type, ("[", "]"))
        lines.append(f'    {node_ids[activity.id]}{opening}"{node_label(activity, counts)}"{closing}')
    arrows = edges(definition)
    for edge in arrows:
        arrow = "-.->" if edge.dashed else "-->"
        label = f"|{escape_label(edge.label)}|" if edge.label else ""
        lines.append(f"    {node_ids[edge.source]} {arrow}{label} {node_ids[edge.target]}")
    # Compensations after every other arrow: linkStyle numbers the arrows in order.
    for index, activity in enumerate(definition.activities.values()):
        if activity.compensate is not None:
            undo = activity.compensate.action or f"handler {activity.compensate.handler_name}"
            lines.append(f'    u{index}[/"{escape_label(f"undo: {undo}")}"/]')
            lines.append(f"    {node_ids[activity.id]} -.->|compensate| u{index}")
    lines.extend(f"    classDef {name} {style}" for name, style in CLASS_STYLES.items())
    terminals = [node_ids[a.id] for a in definition.activities.values() if a.type in ("start", "end")]
    lines.extend(_class_lines("terminal", terminals))
    if highlight is not None:
        lines.extend(_highlight_lines(highlight, node_ids, arrows))
    return "\n".join(lines) + "\n"


def _highlight_lines(highlight: Highlight, node_ids: Mapping[str, str], arrows: list[Edge]) -> list[str]:
    marked = highlight.visited | highlight.current | highlight.failed
    lines = _class_lines("unvisited", [n for a, n in node_ids.items() if a not in marked])
    lines += _class_lines("visited", [node_ids[a] for a in node_ids if a in highlight.visited - highlight.current - highlight.failed])
    lines += _class_lines("current", [node_ids[a] for a in node_ids if a in highlight.current])
    lines += _class_lines("failed", [node_ids[a] for a in node_ids if a in highlight.failed])
    taken = [str(index) for index, edge in enumerate(arrows) if (edge.source, edge.target) in highlight.taken]
    if taken:
        lines.append(f"    linkStyle {','.join(taken)} {TAKEN_LINK_STYLE}")
    return lines


def _class_lines(name: str, nodes: list[str]) -> list[str]:
    return [f"    class {','.join(nodes)} {name}"] if nodes else []


def node_label(activity: Activity, counts: Mapping[str, int] | None = None) -> str:
    """A node's label: the id in bold, the type and its gist, and the 24-hour visits."""
    lines = [f"<b>{escape_label(activity.id)}</b>", escape_label(_gist(activity))]
    if counts is not None:
        visits = counts.get(activity.id, 0)
        lines.append(f"<i>{visits} {'instance' if visits == 1 else 'instances'} in 24 h</i>")
    return "<br/>".join(lines)


def _gist(activity: Activity) -> str:
    """The type and the one thing that says what this activity does."""
    kind, detail = activity.type, ""
    if kind in ("decision", "wait") and activity.condition is not None:
        detail = activity.condition.source
        if activity.timeout is not None:
            detail += f" (timeout {short_duration(activity.timeout)})"
    elif kind == "service":
        detail = activity.action or ""
        if activity.retry.max_attempts > 1:
            detail += f", {activity.retry.max_attempts} attempts"
    elif kind == "timer":
        detail = short_duration(activity.duration) if activity.duration is not None else f"until {activity.until.source if activity.until else '?'}"
    elif kind == "set":
        detail = ", ".join(name for name, _ in activity.assignments)
    elif kind == "compensate":
        detail = "undo the completed activities, newest first"
    text = f"{kind}: {' '.join(detail.split())}" if detail else kind
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def short_duration(duration: timedelta) -> str:
    """`1h 30m`, `5m`, `45s`: a duration as a person writes it."""
    seconds = int(duration.total_seconds())
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    shown = [f"{amount}{unit}" for amount, unit in parts if amount]
    return " ".join(shown) or f"{duration.total_seconds():g}s"


def escape_label(text: str) -> str:
    """Label text with every character outside SAFE_CHARACTERS as a Mermaid entity code."""
    return "".join(ch if ch in SAFE_CHARACTERS else f"#{ord(ch)};" for ch in text)


__all__ = ["Edge", "Highlight", "edges", "escape_label", "flowchart", "node_label", "short_duration"]
