"""`process-engine validate`: exit 0 when all is well, exit 1 with file:line reasons, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from process_engine.cli import main
from tests.unit.walking import PROCESSES


def test_the_shipped_examples_are_valid(capsys) -> None:
    assert main(["validate", str(PROCESSES)]) == 0
    out = capsys.readouterr().out
    assert "temperature-control" in out and "0 error(s)" in out


def test_a_folder_with_one_broken_file_exits_1_and_names_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "ok.yaml").write_text((PROCESSES / "temperature-control.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("id: broken\ntrigger:\n  type: kafka\n  topic: t\nactivities:\n  - id: start\n    type: start\n    next: nowhere\n")
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'broken.yaml'}:8: 'next' of 'start' points at unknown activity 'nowhere'" in err


def test_a_missing_path_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(tmp_path / "nope")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_the_console_script_prints_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "garbage.yaml").write_bytes(b"\xff\xfe\x00 not yaml")
    done = subprocess.run(
        [sys.executable, "-m", "process_engine.cli", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "garbage.yaml" in done.stderr
