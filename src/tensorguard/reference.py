"""The bundled reference set (published fingerprints of real LLMs and their labels), and the safe
reading of the small text files that describe a reference set (``labels.csv``, ``clusters.json``)."""

from __future__ import annotations

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tensorguard.errors import TensorguardError

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


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of the regular file ``path`` (a leading byte-order mark dropped), with
    one-line errors for anything else.

    The file is opened non-blocking and its type checked on the open descriptor, so a FIFO or a
    device is refused at once instead of blocking (or reading forever), with no race between the
    check and the read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise TensorguardError(f"{path}: no such file") from None
    except OSError as exc:
        raise TensorguardError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TensorguardError(f"{path}: not a regular file (a {what} must be one)")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read()
    except OSError as exc:
        raise TensorguardError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TensorguardError(f"{path}: not a UTF-8 text file (a {what} must be one)") from None


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
