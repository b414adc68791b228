"""Graph checks over the activities: targets exist, one start, an end is reachable, nothing orphaned."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from process_engine.domain.definition import Activity

TARGET_FIELDS = ("next", "true_path", "false_path", "on_error", "timeout_path")


def check_graph(
    activities: Mapping[str, Activity], fail: Callable[[tuple[Any, ...], str], None]
) -> str | None:
    """Report graph problems through `fail`; return the start activity id when there is one."""
    paths = {activity_id: ("activities", index) for index, activity_id in enumerate(activities)}
    targets_ok = _check_targets(activities, paths, fail)
    starts = [a.id for a in activities.values() if a.type == "start"]
    if not starts:
        fail(("activities",), "no 'start' activity: add `- id: start` with `type: start` first")
        return None
    if len(starts) > 1:
        fail(paths[starts[1]], f"more than one start activity: {starts}")
        return None
    if not targets_ok:
        return starts[0]  # what a misspelt target cuts off would only repeat that error
    reachable = _reachable(activities, starts[0])
    if not any(activities[a].type == "end" for a in reachable):
        fail(paths[starts[0]], "no 'end' activity is reachable from the start")
    for activity_id in activities:
        if activity_id not in reachable:
            fail(paths[activity_id], f"activity '{activity_id}' is unreachable from the start")
    return starts[0]


def _check_targets(
    activities: Mapping[str, Activity],
    paths: Mapping[str, tuple[Any, ...]],
    fail: Callable[[tuple[Any, ...], str], None],
) -> bool:
    """Report targets that name no activity; True when there are none."""
    ok = True
    for activity in activities.values():
        for name in TARGET_FIELDS:
            target = getattr(activity, name)
            if target and target not in activities:
                ok = False
                fail(paths[activity.id] + (name,),
                     f"'{name}' of '{activity.id}' points at unknown activity '{target}'{_near(target, activities)}")
        for target in activity.branches:
            if target not in activities:
                ok = False
                fail(paths[activity.id] + ("branches",),
                     f"branch of '{activity.id}' points at unknown activity '{target}'{_near(target, activities)}")
    return ok


def _near(target: str, activities: Mapping[str, Activity]) -> str:
    close = difflib.get_close_matches(str(target), list(activities), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _reachable(activities: Mapping[str, Activity], start: str) -> set[str]:
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        current = frontier.pop()
        if current in seen or current not in activities:
            continue
        seen.add(current)
        frontier.extend(activities[current].targets())
    return seen
