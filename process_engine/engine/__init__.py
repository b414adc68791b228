"""The walker: a pure function from (definition, instance, event, now) to (instance, commands)."""

from process_engine.engine.commands import (
    CancelTimer,
    Command,
    InstanceCompleted,
    InstanceFailed,
    RecordHistory,
    RunAction,
    ScheduleTimer,
)
from process_engine.engine.events import (
    ActionFailed,
    ActionSucceeded,
    Cancel,
    Event,
    Fail,
    Resume,
    Retry,
    Start,
    Suspend,
    TimerFired,
    VariablesRefreshed,
)
from process_engine.engine.walker import advance

__all__ = [
    "ActionFailed",
    "ActionSucceeded",
    "Cancel",
    "CancelTimer",
    "Command",
    "Event",
    "Fail",
    "InstanceCompleted",
    "InstanceFailed",
    "RecordHistory",
    "Resume",
    "Retry",
    "RunAction",
    "ScheduleTimer",
    "Start",
    "Suspend",
    "TimerFired",
    "VariablesRefreshed",
    "advance",
]
