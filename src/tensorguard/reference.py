"""The bundled reference set (published fingerprints of real LLMs and their labels), and the
``labels.csv`` files that name a reference set's base models."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_text_file

#: ``features/`` at the top of the source tree (the editable install and the repository).
BUNDLED_DIR = Path(__file__).resolve().parents[2] / "features"
LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class Label:
    """What a model derives from, from its public card."""

    base_model: str
    family: str | None = None


def bundled_dir() -> Path:
    """The bundled reference fingerprints; an error if this install does not carry them."""
    if not any(BUNDLED_DIR.glob("*_features.json")):
        raise TensorguardError(
            f"bundled reference fingerprints not found at {BUNDLED_DIR}; pass a directory of "
            "*_features.json files instead")
    return BUNDLED_DIR


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
