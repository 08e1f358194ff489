"""Shared test helpers: run the real CLI entry point in-process and capture what a user sees."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from tensorguard import cli


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """``run_cli("inspect", path, "--json")`` -> CliResult(exit code, stdout, stderr)."""

    def run(*args: object) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["tensorguard", *map(str, args)])
        capsys.readouterr()
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
