"""Signature packs: a catalogue's entries in one versioned, checksummed, read-only file.

A team builds a catalogue once, exports it as a pack and everyone scans against it offline. A
pack is an SQLite file holding the catalogue's own tables (``store``: labels, where the weights
were read and their header hash, the ``inspect`` summary, the fingerprint, the retrieval vector
and the full signature of every entry) plus a ``pack`` table saying what it is:

* ``format`` (``FORMAT``), ``version`` (``PACK_VERSION``), ``rows``, ``created_by`` (the
  tensorguard version that wrote it) and ``sha256``: a digest of every row's content in name
  order (``rows_digest``), so a damaged or altered pack is noticed whatever SQLite makes of it;
* ``PRAGMA application_id`` is ``PACK_ID``, so a pack is told from a catalogue by its first 100
  bytes (``is_pack``), and the file is in rollback-journal mode: one file, nothing beside it.

Nothing in a pack is trusted before ``verify_pack`` has checked it whole: the SQLite header's page
count against the file's size (truncation), nothing but the expected tables (no view or trigger
runs), the pack version, every column's size before it is read, JSON nesting, and the digest. A
refused pack is one line and changes nothing. ``scan --db PACK`` reads a verified pack directly.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorguard.catalogue.store import Row, Store, drop_index
from tensorguard.errors import TensorguardError
from tensorguard.inputs import regular_file
from tensorguard.outputs import write_bytes_atomic

FORMAT = "tensorguard signature pack"
#: The pack layout's version.
PACK_VERSION = 1
#: The catalogue schema of a pack's tables: schema 1's, without the retrieval index (a pack is
#: checked whole before use and the index is derived data; importing a pack indexes its rows).
PACK_SCHEMA = 1
#: ``PRAGMA application_id`` of a pack: "TGPK".
PACK_ID = 0x5447504B
#: The largest value accepted per column (bytes), checked before a value is read.
LIMITS = {"name": 4096, "labels": 64 * 1024, "path": 64 * 1024, "header_hash": 128,
          "architecture": 1 << 20, "fingerprint": 1 << 20, "features": 14 * 8, "retrieval": 64 * 1024,
          "added_at": 64, "tokens": 1 << 20, "signature": 16 << 20}
#: The most rows a pack may declare, and the deepest JSON nesting accepted in a value.
MAX_ROWS, MAX_DEPTH = 10_000_000, 32

_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = {"token_lists", "models", "signatures", "pack"}
_ROW_COLUMNS = ("name", "labels", "path", "header_hash", "architecture", "fingerprint", "features",
                "retrieval", "added_at")


@dataclass(frozen=True)
class PackInfo:
    """What a pack says about itself (checked)."""

    path: str
    version: int
    rows: int
    sha256: str
    created_by: str
    size: int  # bytes


def is_pack(path: str | Path) -> bool:
    """Whether ``path`` is a regular file that starts as a signature pack does (no full check)."""
    try:
        if not Path(path).is_file():  # a FIFO or device is never opened (it could block)
            return False
        with Path(path).open("rb") as fh:
            head = fh.read(100)
    except (OSError, ValueError):
        return False
    return (len(head) == 100 and head.startswith(_SQLITE_MAGIC)
            and struct.unpack(">I", head[68:72])[0] == PACK_ID)


def _field(digest: Any, value: bytes | None) -> None:
    """One length-prefixed field (``None`` is told from empty)."""
    if value is None:
        digest.update(b"\xff" * 8)
    else:
        digest.update(struct.pack("<Q", len(value)))
        digest.update(value)


def _canonical(value: object) -> bytes | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False).encode()


def rows_digest(rows: Sequence[Row]) -> str:
    """sha256 over every row's content in name order: labels, path, header hash, summary,
    fingerprint, features, retrieval tokens and vector, signature, date added."""
    digest = hashlib.sha256(FORMAT.encode())
    for row in sorted(rows, key=lambda r: r.name):
        for value in (row.name.encode(), _canonical(row.labels), _canonical(row.path),
                      _canonical(row.header_hash), _canonical(row.architecture),
                      _canonical(row.fingerprint), row.features,
                      _canonical(list(row.retrieval_tokens) if row.retrieval_tokens is not None else None),
                      row.retrieval, row.signature, row.added_at.encode()):
            _field(digest, value)
    return digest.hexdigest()


def write_pack(rows: Sequence[Row], path: str | Path, *, force: bool = False,
               created_by: str = "") -> PackInfo:
    """Write ``rows`` (with their signatures) as a pack at ``path``, atomically (never over an
    existing file without ``force``)."""
    path = Path(path)
    digest = rows_digest(rows)
    with tempfile.TemporaryDirectory(prefix="tensorguard-pack-") as tmp:
        build = Path(tmp) / "pack.sqlite"
        with Store.open(build, writable=True) as store:
            store.put(rows, replace=False)
        with closing(sqlite3.connect(str(build), isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=DELETE")  # one file: no write-ahead log beside it
            drop_index(db)
            db.execute(f"PRAGMA user_version = {PACK_SCHEMA}")
            db.execute("CREATE TABLE pack (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = {"format": FORMAT, "version": str(PACK_VERSION), "rows": str(len(rows)),
                    "sha256": digest, "created_by": created_by}
            db.executemany("INSERT INTO pack (key, value) VALUES (?, ?)", sorted(meta.items()))
            db.execute(f"PRAGMA application_id = {PACK_ID}")
            db.execute("VACUUM")
        data = build.read_bytes()
    write_bytes_atomic(path, data, force=force)
    return PackInfo(str(path), PACK_VERSION, len(rows), digest, created_by, len(data))


# ---- reading: nothing is trusted before it is checked


def _refuse(path: Path, why: str) -> TensorguardError:
    return TensorguardError(f"{path}: not a usable signature pack ({why}); nothing was read from it")


def _check_file(path: Path) -> int:
    """The SQLite header: magic, application id, and its page count against the file's size."""
    regular_file(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise TensorguardError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        raise _refuse(path, "not an SQLite file" if len(head) >= 16 else "truncated")
    if struct.unpack(">I", head[68:72])[0] != PACK_ID:
        raise _refuse(path, "an SQLite file without the pack mark: a catalogue is read with --db, "
                            "not imported as a pack")
    page = struct.unpack(">H", head[16:18])[0]
    page = 65536 if page == 1 else page
    pages = struct.unpack(">I", head[28:32])[0]
    if page < 512 or page & (page - 1) or pages * page != size:
        raise _refuse(path, f"truncated or padded: the header says {pages} pages of {page} bytes, "
                            f"the file holds {size} bytes")
    return size


def _depth(value: object, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _json(path: Path, text: object, what: str) -> Any:
    if text is None:
        return None
    if not isinstance(text, str):
        raise _refuse(path, f"{what} is not text")
    try:
        value = json.loads(text)
    except RecursionError:
        raise _refuse(path, f"{what} nested too deeply") from None
    except ValueError as exc:
        raise _refuse(path, f"{what} is not JSON ({exc})") from None
    if _depth(value) > MAX_DEPTH:
        raise _refuse(path, f"{what} nested more than {MAX_DEPTH} levels deep")
    return value


def _meta(path: Path, db: sqlite3.Connection) -> dict[str, str]:
    if db.execute("SELECT count(*) FROM pack").fetchone()[0] > 16:
        raise _refuse(path, "too many pack fields")
    if (db.execute("SELECT max(length(key) + length(value)) FROM pack").fetchone()[0] or 0) > 4096:
        raise _refuse(path, "a pack field is too long")
    meta = {str(k): str(v) for k, v in db.execute("SELECT key, value FROM pack")}
    if meta.get("format") != FORMAT:
        raise _refuse(path, f"format {meta.get('format')!r} is not {FORMAT!r}")
    try:
        version, rows = int(meta["version"]), int(meta["rows"])
    except (KeyError, ValueError):
        raise _refuse(path, "no valid version or row count") from None
    if version > PACK_VERSION:
        raise _refuse(path, f"pack version {version} is newer than this tensorguard's ({PACK_VERSION}); "
                            "upgrade tensorguard")
    if version < 1:
        raise _refuse(path, f"unknown pack version {version}")
    if not 0 <= rows <= MAX_ROWS:
        raise _refuse(path, f"an absurd row count ({rows})")
    return meta


def _check_sizes(path: Path, db: sqlite3.Connection, declared: int) -> None:
    """Every column's size, from SQLite's own lengths, before any value is read."""
    found = db.execute("SELECT count(*) FROM models").fetchone()[0]
    if found != declared:
        raise _refuse(path, f"{found} rows where the pack declares {declared}")
    for table, columns in (("models", _ROW_COLUMNS), ("signatures", ("name", "signature")),
                           ("token_lists", ("tokens",))):
        for column in columns:
            longest = db.execute(f"SELECT max(length(CAST({column} AS BLOB))) FROM {table}").fetchone()[0]
            if longest is not None and longest > LIMITS[column]:
                raise _refuse(path, f"a {column} of {longest} bytes (at most {LIMITS[column]})")
    if db.execute("SELECT count(*) FROM signatures").fetchone()[0] > declared:
        raise _refuse(path, "more signatures than rows")
    if db.execute("SELECT count(*) FROM token_lists").fetchone()[0] > declared:
        raise _refuse(path, "more token lists than rows")


def _rows(path: Path, db: sqlite3.Connection) -> Iterator[Row]:
    lists: dict[int, tuple[str, ...]] = {}
    for list_id, text in db.execute("SELECT id, tokens FROM token_lists"):
        tokens = _json(path, text, "a token list")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise _refuse(path, "a token list is not a list of strings")
        lists[int(list_id)] = tuple(tokens)
    query = (f"SELECT {', '.join('m.' + c for c in _ROW_COLUMNS)}, m.tokens, s.signature "
             "FROM models m LEFT JOIN signatures s ON s.name = m.name ORDER BY m.name")
    for values in db.execute(query):
        d = dict(zip(_ROW_COLUMNS, values[:len(_ROW_COLUMNS)], strict=True))
        tokens, signature = values[len(_ROW_COLUMNS):]
        labels = _json(path, d["labels"], "labels")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise _refuse(path, f"the labels of {d['name']!r} are not text")
        architecture, fingerprint = (_json(path, d["architecture"], "a summary"),
                                     _json(path, d["fingerprint"], "a fingerprint"))
        for what, value in (("summary", architecture), ("fingerprint", fingerprint)):
            if value is not None and not isinstance(value, dict):
                raise _refuse(path, f"the {what} of {d['name']!r} is not an object")
        for column in ("name", "added_at", "path", "header_hash"):
            if not isinstance(d[column], str) and (column in ("name", "added_at") or d[column] is not None):
                raise _refuse(path, f"a {column} is not text")
        for column in ("features", "retrieval"):
            if d[column] is not None and not isinstance(d[column], bytes):
                raise _refuse(path, f"a {column} is not binary")
        if signature is not None and not isinstance(signature, bytes):
            raise _refuse(path, "a signature is not binary")
        if tokens is not None and (not isinstance(tokens, int) or tokens not in lists):
            raise _refuse(path, f"the token list of {d['name']!r} is missing")
        yield Row(d["name"], labels, d["path"], d["header_hash"], architecture, fingerprint, d["features"],
                  signature, lists[tokens] if tokens is not None else None, d["retrieval"],
                  d["added_at"])


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)
    db.execute("PRAGMA trusted_schema = OFF")
    db.execute("PRAGMA query_only = ON")
    return db


def read_pack(path: str | Path) -> tuple[PackInfo, list[Row]]:
    """Check the pack at ``path`` whole and return what it says and its rows (signatures
    included); a one-line ``TensorguardError`` for anything amiss."""
    path = Path(path)
    size = _check_file(path)
    try:
        with closing(_open(path)) as db:
            kinds = {(str(t), str(n)) for t, n in db.execute("SELECT type, name FROM sqlite_master")}
            extra = sorted(n for t, n in kinds if not (t == "table" and n in _TABLES)
                           and not (t == "index" and n.startswith("sqlite_autoindex_")))
            if extra or {n for t, n in kinds if t == "table"} != _TABLES:
                raise _refuse(path, f"unexpected tables or code ({', '.join(extra) or 'missing tables'})")
            if db.execute("PRAGMA user_version").fetchone()[0] != PACK_SCHEMA:
                raise _refuse(path, "an unknown catalogue schema")
            meta = _meta(path, db)
            _check_sizes(path, db, int(meta["rows"]))
            rows = list(_rows(path, db))
    except sqlite3.DatabaseError as exc:
        raise _refuse(path, f"damaged: {exc}") from None
    if rows_digest(rows) != meta["sha256"]:
        raise _refuse(path, "checksum mismatch: damaged or altered")
    return PackInfo(str(path), int(meta["version"]), len(rows), meta["sha256"],
                    meta.get("created_by", ""), size), rows


_VERIFIED: dict[tuple[str, int, int], PackInfo] = {}


def verify_pack(path: str | Path) -> PackInfo:
    """``read_pack``'s checks, done once per file version in a process (``scan --db PACK``)."""
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except (OSError, ValueError):
        return read_pack(path)[0]
    if key not in _VERIFIED:
        _VERIFIED[key] = read_pack(path)[0]
    return _VERIFIED[key]
