"""The authoring loop of `process-engine dev`: edit, break and add files while it runs.

Each reload prints one line naming the user's own file (not the engine's fast-timer
copy), what it shortened, and creates the topic of a newly added definition.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import wait_until
from tests.integration.test_dev_stack import ROOT, DevRun, running_dev

pytestmark = pytest.mark.integration
RELOAD_TIMEOUT = 30.0

NEW = """
id: door-watch
trigger: {type: kafka, topic: door-events-dev-test, correlate: tags.door}
variables:
  - {name: door, source: tags.door}
activities:
  - {id: start, type: start}
  - {id: hold, type: timer, duration: 2m}
  - {id: done, type: end}
"""


def printed(run: DevRun, text: str) -> bool:
    if run.process.poll() is not None:
        raise AssertionError(f"dev exited with {run.process.returncode}:\n{run.output()}")
    return any(text == line for line in run.lines)


def test_reloads_name_the_users_file_say_what_they_shortened_and_create_topics(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    seed = rules / "temperature-control.yaml"
    shutil.copy(ROOT / "processes" / "temperature-control.yaml", seed)
    with running_dev(rules, tmp_path, subprocess.DEVNULL) as run:
        [start] = [line for line in run.lines if " start ID " in line]
        assert "PROCESS_DEFINITIONS_PATH=/" in start and f"PROCESS_DEFINITIONS_PATH={rules} " not in start  # the engine's copy

        seed.write_text(seed.read_text().replace("value: 25.0", "value: 26.0"))
        wait_until(lambda: printed(run, f"loaded temperature-control v2 from {seed}"), RELOAD_TIMEOUT, "the reload line")
        assert printed(run, "  fast timers: wait_recheck 5m -> 30s")

        broken = rules / "broken.yaml"
        # Written whole (a rename), so the watcher cannot read it half-written and report an empty file.
        (tmp_path / "broken.yaml").write_text("id: broken\ntrigger: {type: kafka, topic: [unclosed\n")
        os.replace(tmp_path / "broken.yaml", broken)
        wait_until(lambda: any(line.startswith(f"{broken}:") for line in run.lines), RELOAD_TIMEOUT, "the error line")
        [error] = [line for line in run.lines if line.startswith(f"{broken}:")]
        assert "malformed YAML" in error and "/definitions/" not in error

        added = rules / "door-watch.yaml"
        added.write_text(NEW)
        wait_until(lambda: printed(run, f"loaded door-watch v1 from {added}"), RELOAD_TIMEOUT, "the new file's line")
        assert printed(run, "  fast timers: hold 2m -> 12s")
        assert printed(run, "  created topic door-events-dev-test (no simulated data: produce to it yourself)")
