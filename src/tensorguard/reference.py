"""The bundled reference set (published fingerprints of real LLMs and their labels), and the
``labels.csv`` files that name a reference set's base models."""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_text_file

#: The package that carries the bundled set: the repository's top-level ``features/``, mapped into
#: the package at build time (``pyproject.toml``), so a wheel, an sdist and a checkout all have it.
BUNDLED_PACKAGE = "tensorguard.features"
LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class Label:
    """What a model derives from, from its public card."""

    base_model: str
    family: str | None = None


@functools.cache
def bundled_dir() -> Path:
    """The folder of the bundled reference fingerprints (read-only package data); an error if this
    install does not carry them."""
    try:
        found = [Path(str(p)) for p in resources.files(BUNDLED_PACKAGE).iterdir()
                 if p.name.endswith("_features.json")]
    except (ModuleNotFoundError, OSError, TypeError):
        found = []
    if not found:
        raise TensorguardError(
            f"this installation carries no bundled reference fingerprints ({BUNDLED_PACKAGE}); "
            "pass a directory of *_features.json files instead")
    return found[0].parent.resolve()


def bundled_count() -> int:
    """How many fingerprints the bundled reference set holds."""
    return sum(1 for _ in bundled_dir().glob("*_features.json"))


def is_bundled(path: str | Path) -> bool:
    """Whether ``path`` is the bundled reference folder itself (never written to)."""
    try:
        return Path(path).resolve() == bundled_dir()
    except (TensorguardError, OSError):
        return False


def load_labels(path: str | Path) -> dict[str, Label]:
    """Read ``model_name,base_model[,family]`` rows; one-line errors for a malformed file."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_text_file(path, "labels file"), newline=""))
    try:
        fields = set(reader.fieldnames or ())
        if not {"model_name", "base_model"} <= fields:
            raise TensorguardError(
                f"{path}: labels need columns model_name,base_model[,family] (found "
                f"{','.join(reader.fieldnames or []) or 'none'})")
        labels = {}
        for row in reader:
            name = (row.get("model_name") or "").strip()
            if name:
                labels[name] = Label((row.get("base_model") or "").strip(),
                                     (row.get("family") or "").strip() or None)
    except csv.Error as exc:
        raise TensorguardError(f"{path}: not a labels CSV file (line {reader.line_num}: {exc})") from None
    if not labels:
        raise TensorguardError(f"{path}: no labelled models")
    return labels
