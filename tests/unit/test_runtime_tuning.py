"""`process-engine run` tunes the interpreter once it has started (checked in a child process)."""

from __future__ import annotations

import subprocess
import sys

from process_engine.service import GC_YOUNG_THRESHOLD, GIL_SWITCH_SECONDS

PROBE = """
import gc, sys
from process_engine.service import tune_runtime
before = gc.get_freeze_count()
tune_runtime()
print(gc.get_threshold()[0], sys.getswitchinterval(), gc.get_freeze_count() > before)
"""


def test_tune_runtime_sets_the_collector_and_the_gil_switch_interval() -> None:
    output = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert output == [str(GC_YOUNG_THRESHOLD), str(GIL_SWITCH_SECONDS), "True"]
