"""`process-engine test` and `process-engine replay`: exit codes and output, never a traceback."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from process_engine.adapters.definitions.yaml_loader import TEST_SUFFIX, LoadResult, load_paths
from process_engine.app import definition_extensions
from process_engine.domain.definition import ProcessDefinition
from process_engine.domain.errors import DefinitionErrors
from process_engine.flowtest.replay import read_recording, replay, report_lines
from process_engine.flowtest.report import CaseResult, compare, result_lines, summary_line, write_junit
from process_engine.flowtest.simulator import SimulationError, problems, run_case
from process_engine.flowtest.spec import FlowTest, FlowTestFile, load_test_file

DEFAULT_PATH = "processes/"


def test_command(paths: list[str], junit: str | None, definitions_path: str | None) -> int:
    """Run flow test files (`*.test.yaml`) found under `paths` (default: processes/).

    Args:
        paths: test files or folders to search.
        junit: where to write a JUnit XML report, if anywhere.
        definitions_path: a folder to look in for definitions not found beside a test file.

    Returns:
        0 when every test passed, 1 otherwise.
    """
    targets = [Path(p) for p in (paths or [DEFAULT_PATH])]
    missing = [str(p) for p in targets if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    files = find_test_files(targets)
    if not files:
        print(f"error: no flow tests (*{TEST_SUFFIX}) under {', '.join(map(str, targets))}", file=sys.stderr)
        return 1
    finder = DefinitionFinder(definitions_path)
    results: list[CaseResult] = []
    with quiet_engine_logs():
        for file in files:
            for number, result in enumerate(run_test_file(file, finder)):
                if number == 0 and result.definition_file:
                    print(f"{result.file}: {result.definition_id} from {result.definition_file}", flush=True)
                print("\n".join(result_lines(result)), flush=True)
                results.append(result)
    print(summary_line(results))
    return _write_junit(results, junit) if junit else (0 if all(r.passed for r in results) else 1)


# pytest would collect a `test_*` function imported into a test module
test_command.__test__ = False  # type: ignore[attr-defined]


def _write_junit(results: list[CaseResult], junit: str) -> int:
    try:
        write_junit(results, junit)
    except OSError as error:
        print(f"error: cannot write the JUnit report {junit}: {error}", file=sys.stderr)
        return 1
    return 0 if all(r.passed for r in results) else 1


@contextmanager
def quiet_engine_logs() -> Iterator[None]:
    """Hold back the engine's warnings (dead letters): the report counts them, line by line they are noise."""
    engine = logging.getLogger("process_engine")
    level = engine.level
    engine.setLevel(logging.ERROR)
    try:
        yield
    finally:
        engine.setLevel(level)


def find_test_files(targets: list[Path]) -> list[Path]:
    """Flow test files: the files given, and `*.test.yaml` under the folders given."""
    found: list[Path] = []
    for target in targets:
        if target.is_dir():
            found.extend(sorted(p for p in target.rglob(f"*{TEST_SUFFIX}") if not p.name.startswith(".")))
        else:
            found.append(target)
    return list(dict.fromkeys(found))


class DefinitionFinder:
    """Looks a definition up beside its test file, then in the definitions folder; loads each folder once."""

    def __init__(self, definitions_path: str | None):
        self.fallback = Path(definitions_path) if definitions_path else None
        self._loaded: dict[Path, LoadResult] = {}

    def _load(self, folder: Path) -> LoadResult:
        key = folder.resolve()
        if key not in self._loaded:
            self._loaded[key] = load_paths([folder], definition_extensions())
        return self._loaded[key]

    def find(self, definition_id: str, folder: Path) -> tuple[ProcessDefinition | None, list[str]]:
        """The definition, or None and the places searched with their load errors."""
        searched: list[str] = []
        for place in [folder, self.fallback]:
            if place is None or not place.exists():
                continue
            loaded = self._load(place)
            if definition_id in loaded.definitions:
                return loaded.definitions[definition_id], []
            searched.append(str(place))
            searched.extend(f"  {error.location_text()}" for error in loaded.errors)
        return None, searched


def run_test_file(path: Path, finder: DefinitionFinder) -> list[CaseResult]:
    """Every test case of one file; a file that cannot be run is one failed result."""
    try:
        spec = load_test_file(path)
    except DefinitionErrors as errors:
        return [CaseResult(str(path), "", None, errors=[e.location_text() for e in errors.errors])]
    definition, searched = finder.find(spec.definition_id, path.parent)
    if definition is None:
        where = f"{spec.path}:{spec.definition_line}" if spec.definition_line else spec.path
        reason = f"{where}: definition '{spec.definition_id}' not found; searched: {searched[0] if searched else 'nothing'}"
        return [CaseResult(spec.path, spec.definition_id, None, errors=[reason, *searched[1:]])]
    return [replace(run_test(spec, case, definition), definition_file=definition.source_file) for case in spec.tests]


def run_test(spec: FlowTestFile, case: FlowTest, definition: ProcessDefinition) -> CaseResult:
    """One test case: simulate, then compare with its expectations."""
    result = CaseResult(spec.path, definition.id, case.name)
    started = time.perf_counter()
    result.errors = [p.location_text() for p in problems(case, definition, spec.path)]
    if not result.errors:
        try:
            result.mismatches = compare(case.expectations, run_case(case, definition))
        except SimulationError as error:
            result.errors = [f"{spec.path}:{error.line or case.line}: {error}"]
        except Exception as error:  # an engine bug in one test must not hide the results of the others
            result.errors = [f"{spec.path}:{case.line}: the simulation crashed: {type(error).__name__}: {error}"]
    result.seconds = time.perf_counter() - started
    return result


def replay_command(from_file: str, definitions: list[str], json_output: bool) -> int:
    """Replay recorded messages (JSON lines) through the definitions under `definitions`.

    Args:
        from_file: the recording, one message a line.
        definitions: definition files or folders (default: processes/).
        json_output: print one JSON document instead of text.

    Returns:
        0 on a clean run; 1 when a definition failed to load, a line was bad or the run stopped.
    """
    loaded = _load_definitions(definitions or [DEFAULT_PATH])
    if loaded is None:
        return 1
    try:
        messages, bad_lines = read_recording(Path(from_file))
    except OSError as error:
        print(f"error: cannot read {from_file}: {error.strerror or error}", file=sys.stderr)
        return 1
    for bad in bad_lines:
        print(f"{from_file}:{bad.line}: {bad.reason} (line skipped)", file=sys.stderr)
    try:
        with quiet_engine_logs():
            report = replay(messages, list(loaded.definitions.values()))
    except SimulationError as error:
        print(f"error: replay stopped: {error}", file=sys.stderr)
        return 1
    if json_output:
        document = {**report.to_json(), "bad_lines": [{"line": b.line, "reason": b.reason} for b in bad_lines]}
        print(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    else:
        print("\n".join(report_lines(report)))
    return 1 if bad_lines or loaded.errors else 0


def _load_definitions(paths: list[str]) -> LoadResult | None:
    """Load definitions, printing errors; None when there is nothing to replay with."""
    targets = [Path(p) for p in paths]
    missing = [str(p) for p in targets if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return None
    loaded = load_paths(targets, definition_extensions())
    for error in loaded.errors:
        print(error.location_text(), file=sys.stderr)
    if not loaded.definitions:
        print(f"error: no definitions loaded from {', '.join(paths)}", file=sys.stderr)
        return None
    return loaded
