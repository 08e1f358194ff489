"""Checks on the files a user gives, before anything is read from them.

Only regular files are read: a FIFO would block forever and a device such as ``/dev/zero`` never
ends, so both are refused from their ``stat`` alone (small text files, from the open
descriptor: no race between the check and the read). JSON inputs are bounded in size and nesting,
so a hostile file gives a one-line error instead of exhausting memory or the stack.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from tensorguard.errors import TensorguardError

#: The largest JSON input read whole (fingerprints, clusters files, configs, indexes).
MAX_JSON_BYTES = 256 * 1024 * 1024

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def regular_file(path: str | Path) -> Path:
    """``path`` if it is a regular file (symbolic links followed); a one-line error otherwise."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TensorguardError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # permission, a name too long, a NUL byte
        raise TensorguardError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(mode):
        what = next((w for test, w in _KINDS if test(mode)), "not a regular file")
        raise TensorguardError(f"{path}: is {what}, not a file tensorguard can read")
    return path


def special_file(path: Path) -> str | None:
    """What ``path`` is if it is neither a regular file nor a directory (a FIFO, a device...)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((w for test, w in _KINDS if test(mode)), "not a regular file")


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


def read_json(path: str | Path, *, what: str) -> Any:
    """The JSON value in the regular file ``path`` (``what`` names it in errors, e.g. "a
    fingerprint"), with one-line errors for anything that is not bounded, UTF-8 JSON."""
    path = regular_file(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise TensorguardError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise TensorguardError(f"{path}: not {what} (larger than {MAX_JSON_BYTES >> 20} MB)")
    return parse_json(raw, path, what=what)


def parse_json(raw: bytes, path: Path, *, what: str) -> Any:
    """Decode ``raw`` as UTF-8 JSON with one-line errors (deep nesting included)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TensorguardError(f"{path}: not {what} (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise TensorguardError(f"{path}: not {what} (invalid JSON: {exc.msg} at line {exc.lineno} "
                               f"column {exc.colno})") from None
    except ValueError:  # an integer of thousands of digits (Python's conversion limit)
        raise TensorguardError(f"{path}: not {what} (a number too long to read)") from None
    except RecursionError:
        raise TensorguardError(f"{path}: not {what} (JSON nested too deeply)") from None
