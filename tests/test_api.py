"""The public API: lazy, complete, in library terms (the README's Python session runs in
``tests/test_docs.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tensorguard
from tensorguard.errors import OptionError, OutputExistsError, UsageError
from tensorguard.synthetic import ModelSpec, make_weights, save_model

HEAVY = ("scipy", "sklearn", "matplotlib")


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


def test_import_is_lazy() -> None:
    modules = ("torch", "numpy", *HEAVY)
    loaded = _python(f"import sys, tensorguard; print(sorted(m for m in {modules!r} if m in sys.modules))")
    assert loaded.strip() == "[]"


def test_fingerprint_command_loads_no_scipy_sklearn_or_matplotlib(tmp_path: Path) -> None:
    model = save_model(make_weights(ModelSpec(layers=1), 0), tmp_path / "m.safetensors")
    code = ("import sys; from tensorguard import cli\n"
            f"sys.argv = ['tensorguard', 'fingerprint', {str(model)!r}, '--json', '-q', '--samples', '2']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert _python(code).strip().splitlines()[-1] == "LOADED []"


def test_every_public_name_resolves() -> None:
    assert set(tensorguard.__all__) - {"__version__"} == set(tensorguard._LAZY)
    for name in tensorguard.__all__:
        assert getattr(tensorguard, name) is not None, name
    with pytest.raises(AttributeError):
        tensorguard.no_such_thing  # noqa: B018


def test_errors_speak_in_library_terms_and_the_cli_translates_them() -> None:
    err = OptionError("samples", 0, "must be at least 1")
    assert str(err) == "samples=0: must be at least 1"
    assert err.for_cli({}) == "--samples 0: must be at least 1"
    assert OptionError("kinds", "pink", "unknown").for_cli({"kinds": "--noise"}) == "--noise pink: unknown"
    usage = UsageError("x: pass its base model with {base}", "base")
    assert str(usage) == "x: pass its base model with base=" and usage.for_cli({}).endswith("--base")
    exists = OutputExistsError(Path("f.json"))
    assert "force=True" in str(exists) and "--force" in exists.for_cli({})
