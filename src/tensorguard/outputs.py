"""Atomic writes that never replace a user's file without ``force``.

Each output goes to a temporary file in its own directory, is flushed to disk and then renamed
into place, so a reader (or an interrupted run) never sees half a file. Writing problems (no
permission, a directory where the file should go, a name too long or holding a NUL byte) are
one-line ``TensorguardError``s naming the path.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tensorguard.errors import OutputExistsError, TensorguardError
from tensorguard.reference import is_bundled


def _cannot_write(path: Path, exc: OSError | ValueError) -> TensorguardError:
    why = getattr(exc, "strerror", None) or ("the name holds a NUL byte" if "null" in str(exc) else exc)
    return TensorguardError(f"{path}: cannot write: {why}")


def check_writable(path: Path, *, force: bool) -> None:
    """Refuse to overwrite ``path`` unless ``force``, never replace a directory, and never write
    into the bundled reference set (it is the package's read-only data)."""
    try:
        if is_bundled(path.parent):
            raise TensorguardError(f"{path}: the folder is tensorguard's bundled reference set, "
                                   "which is read-only; write elsewhere")
        if path.is_dir():
            raise TensorguardError(f"{path}: is a directory; name a file to write")
        if path.exists() and not force:
            raise OutputExistsError(path)
    except (OSError, ValueError) as exc:
        raise _cannot_write(path, exc) from None


def _temporary(path: Path, data: bytes) -> Path:
    """``data`` written to a new temporary file beside ``path``, flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tensorguard-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block is done, then raise it: outputs renamed inside
    appear together or not at all. Outside the main thread, nothing is deferred."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def write_all(files: Sequence[tuple[Path, bytes]], *, force: bool) -> list[Path]:
    """Write several files as one output: all are checked, then all written to temporary files,
    then all renamed into place with Ctrl-C held, so they appear together or not at all."""
    paths = [Path(p) for p, _ in files]
    for path in paths:
        check_writable(path, force=force)
    temporaries: list[Path] = []
    current = paths[0] if paths else Path()  # the file being written, named if that fails
    try:
        for current, (_, data) in zip(paths, files, strict=True):
            temporaries.append(_temporary(current, data))
        with deferred_interrupts():
            for tmp, current in zip(temporaries, paths, strict=True):
                os.replace(tmp, current)
    except (OSError, ValueError) as exc:
        raise _cannot_write(current, exc) from None
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
    return paths


def write_bytes_atomic(path: str | Path, data: bytes, *, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file renamed into place)."""
    return write_all([(Path(path), data)], force=force)[0]


def write_text_atomic(path: str | Path, text: str, *, force: bool = False) -> Path:
    """Write a UTF-8 text file atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), force=force)
