"""The package list in ``pyproject.toml`` is the tree's: a package left out would be missing from
the wheel (the wheel itself is built and installed by ``tests/test_wheel.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tensorguard
from tensorguard import reference

tomllib = pytest.importorskip("tomllib", reason="the standard library reads TOML from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_of_the_tree_is_listed_and_the_bundled_set_is_mapped() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    src = Path(tensorguard.__file__).parent
    tree = {".".join(p.parent.relative_to(src.parent).parts) for p in src.rglob("__init__.py")}
    assert set(config["packages"]) == tree | {reference.BUNDLED_PACKAGE}
    assert config["package-dir"][reference.BUNDLED_PACKAGE] == "features"


def test_the_bundled_set_is_read_as_package_data() -> None:
    assert reference.bundled_count() == len(list((ROOT / "features").glob("*_features.json")))
    assert (reference.bundled_dir() / reference.LABELS_FILE).is_file()
