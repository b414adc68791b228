"""Warnings for definitions whose instances may mix devices: they wait, read the message, and have no `correlate`.

Without `correlate` a keyed message is correlated by its Kafka key, but unkeyed
messages of every device share one key: the running instance's variables are
refreshed by whichever device spoke last. That is right for one device per topic
and wrong for many, which the engine cannot tell, so it warns and does not fail.
"""

from __future__ import annotations

from process_engine.domain.definition import ProcessDefinition

WAITING_TYPES = ("timer", "wait")
# Variable names that usually hold the device's identity, best first.
IDENTITY_NAMES = ("device_id", "device", "sensor_id", "sensor", "entity_id", "host", "id")


def correlation_warnings(definition: ProcessDefinition) -> list[str]:
    """The warnings of one definition, each naming its topic and a `correlate` to consider."""
    trigger = definition.trigger
    if trigger.type not in ("kafka", "redpanda") or trigger.correlate is not None:
        return []
    sources = {v.name: v.source.source for v in definition.variables if v.source is not None}
    if not sources or not _waits(definition):
        return []
    advice = f"set e.g. 'correlate: {_suggested_path(sources)}'" if _suggested_path(sources) else "set 'correlate' to the path of the device id"
    return [
        f"definition '{definition.id}' waits and reads variables from topic '{trigger.topic}' but has no "
        f"'correlate': messages with no Kafka key all refresh one instance, whichever device sent them; {advice}"
    ]


def _waits(definition: ProcessDefinition) -> bool:
    return any(
        a.type in WAITING_TYPES or (a.type == "service" and a.retry.max_attempts > 1)
        for a in definition.activities.values()
    )


def _suggested_path(sources: dict[str, str]) -> str | None:
    for name in IDENTITY_NAMES:
        if name in sources:
            return _bare(sources[name])
    named_id = sorted(name for name in sources if name.endswith("_id"))
    return _bare(sources[named_id[0]]) if named_id else None


def _bare(path: str) -> str:
    return path[2:] if path.startswith("$.") else path
