"""Starts `benchmarks.engine_process` and follows its progress lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class EngineProcess:
    """The engine under test, in a child process."""

    def __init__(self, environ: dict[str, str], log_path: Path):
        env = {**os.environ, **environ, "PYTHONPATH": str(ROOT)}
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.engine_process"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        self.progress: dict[str, Any] = {}
        self.ready: dict[str, Any] | None = None
        self.samples: dict[str, Any] | None = None
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            with self._changed:
                self.progress = message.get("progress", self.progress)
                self.ready = message.get("ready", self.ready)
                self.samples = message.get("samples", self.samples)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until `condition()` holds (re-checked on each line the engine prints)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (result := condition()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise TimeoutError(f"the engine did not get to {what} within {timeout:.0f} s ({self.progress})")
                # An engine that has exited may still have lines in the pipe (its samples are
                # megabytes): the reader ends when it has read them all.
                self._changed.wait(min(remaining, 0.5))
        return result

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the engine's consumer has its partitions."""
        return self.wait(lambda: self.ready, timeout, "its partition assignment")

    def wait_count(self, name: str, count: int, timeout: float) -> dict[str, Any]:
        """Wait until progress counter `name` reaches `count`; returns that progress line."""
        return self.wait(lambda: self.progress if self.progress.get(name, 0) >= count else None, timeout, f"{count} {name}")

    def rss_bytes(self) -> int:
        """The engine process's resident set size."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Stop the engine gracefully; returns its samples."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
            self.wait(lambda: self.samples, timeout, "its samples")
        finally:
            self.kill()
        return self.samples or {}

    def kill(self) -> None:
        """Make sure the child is gone."""
        if self.process.poll() is None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
