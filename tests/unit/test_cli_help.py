"""Every subcommand explains itself; an unreachable database is one line naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from process_engine.cli import build_parser, main
from process_engine.cli_help import COMMANDS
from process_engine.devstack.servers import free_port

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def test_every_subcommand_has_help_text() -> None:
    assert SUBCOMMANDS == sorted(COMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_says_what_it_does_what_it_reads_and_shows_an_example(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    summary, description, settings, examples = COMMANDS[command]
    assert " ".join(description.split()) in out
    assert "examples:" in out and all(example in out for example in examples)
    for setting in settings:
        assert setting.split()[0] in out


@pytest.mark.parametrize("command", ["run", "migrate", "instances", "history", "start"])
def test_commands_that_need_the_database_name_it(command: str) -> None:
    assert any(s.startswith("DATABASE_URL") for s in COMMANDS[command][2])


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "no-such-host.invalid:5432"])
def test_an_unreachable_database_is_one_line_naming_the_setting(host: str) -> None:
    url = f"postgresql://nobody@{host.format(port=free_port())}/none"
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "process_engine.cli", "instances"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: connecting to PostgreSQL at ")
    assert lines[0].endswith("check DATABASE_URL and that PostgreSQL runs and accepts connections")
