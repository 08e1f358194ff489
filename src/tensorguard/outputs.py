"""Atomic writes that never replace a user's file without ``force``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tensorguard.errors import OutputExistsError


def check_writable(path: Path, *, force: bool) -> None:
    """Refuse to overwrite ``path`` unless ``force``."""
    if path.exists() and not force:
        raise OutputExistsError(path)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], *, force: bool = False) -> Path:
    """Write ``path`` through ``write(fileobj)`` into a temporary file, then rename it into place."""
    path = Path(path)
    check_writable(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes, *, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda fh: fh.write(data), force=force)


def write_text_atomic(path: str | Path, text: str, *, force: bool = False) -> Path:
    """Write a UTF-8 text file atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), force=force)
