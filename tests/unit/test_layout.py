"""The tree keeps the layout of STYLE.md: one folder per outside thing, small modules, no binaries."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ROOT / "process_engine" / "adapters"
MAX_MODULE_LINES = 460  # "about 450": a module past this is split where its seams are
ADAPTER_FOLDERS = {"actions", "definitions", "http", "kafka", "memory", "mqtt", "observability", "postgres", "scheduler"}


def tracked_files() -> list[Path]:
    """The files git tracks, or a skip where the tree is not a git checkout (an sdist)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed.decode().split("\0") if name]


def is_binary(path: Path) -> bool:
    """Git's own rule of thumb: a NUL byte in the first 8,000 bytes."""
    with path.open("rb") as file:
        return b"\0" in file.read(8000)


def test_no_binary_file_is_tracked_outside_docs():
    binaries = [p.relative_to(ROOT).as_posix() for p in tracked_files() if p.is_file() and not p.is_symlink() and is_binary(p)]
    assert [name for name in binaries if not name.startswith("docs/")] == []


def test_no_python_module_is_over_about_450_lines():
    long = {}
    for path in tracked_files():
        if path.suffix == ".py" and path.is_file():
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_MODULE_LINES:
                long[path.relative_to(ROOT).as_posix()] = lines
    assert long == {}


def test_adapters_are_one_folder_per_outside_thing():
    modules = sorted(p.name for p in ADAPTERS.glob("*.py") if p.name != "__init__.py")
    folders = {p.name for p in ADAPTERS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert modules == []
    assert folders == ADAPTER_FOLDERS
