"""``docs/cli.md`` is what ``tests/cli_reference.py`` (``make docs``) writes from the ``--help`` texts."""

from __future__ import annotations

from cli_reference import PAGE, render
from tensorguard.cli import cli


def test_cli_reference_is_current():
    assert PAGE.read_text() == render(), "docs/cli.md is out of date: run `make docs`"


def test_cli_reference_covers_every_command():
    text = render()
    for name, command in cli.commands.items():
        assert f"## `tensorguard {name}`" in text
        for sub in getattr(command, "commands", {}):
            assert f"## `tensorguard {name} {sub}`" in text
    assert "Usage: tensorguard index add [OPTIONS] [MODELS]..." in text
