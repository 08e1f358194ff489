"""The catalogue file: one SQLite table of known models, versioned, written in transactions.

* **Schema** ``SCHEMA_VERSION`` is kept in ``PRAGMA user_version``; a file from a newer
  tensorguard is refused, an empty file is initialised.
* **Concurrency**: write-ahead logging, so any number of readers (``scan``) proceed while one
  writer (``index add``) commits; writers wait up to ``BUSY_TIMEOUT_S`` for each other.
* **Atomicity**: every change is one transaction (``with connection``), committed only when the
  whole row is written; an interrupt or a crash before that leaves the file as it was.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tensorguard.errors import TensorguardError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
DB_NAME = "catalogue.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL,            -- JSON object: base, family, licence, any free-form tag
    path TEXT,                       -- where the weights were read from (NULL: fingerprint only)
    header_hash TEXT,                -- sha256 of the headers (and sampled bytes) of its files
    architecture TEXT,               -- JSON: the inspect summary
    fingerprint TEXT,                -- JSON: the paper's fingerprint (published file format)
    features BLOB,                   -- its 14 features as little-endian float64 (for scan)
    retrieval_tokens TEXT,           -- JSON list: tokens of the compact retrieval vector
    retrieval BLOB,                  -- float16 unit vector: embedding Gram over those tokens
    added_at TEXT NOT NULL
);
-- apart, so that reading every row's light columns never walks the large signature blobs
CREATE TABLE IF NOT EXISTS signatures (
    name TEXT PRIMARY KEY REFERENCES models(name) ON DELETE CASCADE,
    signature BLOB NOT NULL          -- tensorguard.signature bytes
);
"""
COLUMNS = ("name", "labels", "path", "header_hash", "architecture", "fingerprint", "features",
           "retrieval_tokens", "retrieval", "added_at")


def default_db_path() -> Path:
    """``$TENSORGUARD_CATALOGUE``, else ``$XDG_CACHE_HOME/tensorguard/catalogue.sqlite`` (``~/.cache``)."""
    if env := os.environ.get("TENSORGUARD_CATALOGUE"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tensorguard" / DB_NAME


@dataclass(frozen=True)
class Row:
    """One stored row, decoded only as far as JSON (arrays stay bytes until needed)."""

    name: str
    labels: dict[str, str]
    path: str | None
    header_hash: str | None
    architecture: dict | None
    fingerprint: dict | None
    features: bytes | None
    signature: bytes | None
    retrieval_tokens: tuple[str, ...] | None
    retrieval: bytes | None
    added_at: str


def _decode(values: tuple, signature: bytes | None) -> Row:
    d = dict(zip(COLUMNS, values))
    return Row(d["name"], json.loads(d["labels"]), d["path"], d["header_hash"],
               json.loads(d["architecture"]) if d["architecture"] else None,
               json.loads(d["fingerprint"]) if d["fingerprint"] else None, d["features"],
               signature, tuple(json.loads(d["retrieval_tokens"])) if d["retrieval_tokens"] else None,
               d["retrieval"], d["added_at"])


def _encode(row: Row) -> tuple:
    def js(x: object) -> str | None:
        return None if x is None else json.dumps(x, sort_keys=True, ensure_ascii=False)

    return (row.name, js(row.labels), row.path, row.header_hash, js(row.architecture),
            js(row.fingerprint), row.features,
            js(list(row.retrieval_tokens)) if row.retrieval_tokens is not None else None,
            row.retrieval, row.added_at)


class Store:
    """An open catalogue file. ``Store.open(path, writable=False)`` on a missing file is an empty,
    read-only catalogue (nothing is created until the first write)."""

    def __init__(self, path: Path, connection: sqlite3.Connection | None) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path: str | Path | None = None, *, writable: bool = False) -> Store:
        path = Path(path) if path is not None else default_db_path()
        if path.is_dir():
            raise TensorguardError(f"{path}: is a directory; --db takes a catalogue file")
        if not path.exists() and not writable:
            return cls(path, None)
        try:
            if writable:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
            else:
                db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=BUSY_TIMEOUT_S, isolation_level=None)
            store = cls(path, db)
            store._check_schema(writable)
        except sqlite3.DatabaseError as exc:
            raise TensorguardError(f"{path}: not a tensorguard catalogue ({exc})") from None
        except OSError as exc:
            raise TensorguardError(f"{path}: cannot open the catalogue ({exc.strerror or exc})") from None
        return store

    def _check_schema(self, writable: bool) -> None:
        assert self._db is not None
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise TensorguardError(f"{self.path}: catalogue schema {version} is newer than this "
                                   f"tensorguard's ({SCHEMA_VERSION}); upgrade tensorguard")
        if version == 0 and tables:
            raise TensorguardError(f"{self.path}: an SQLite file that is not a tensorguard catalogue")
        if writable and version == 0:
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            with self.transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception (KeyboardInterrupt too) rolls back."""
        if self._db is None:
            raise TensorguardError(f"{self.path}: the catalogue is not open for writing")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def rows(self, columns: tuple[str, ...] = COLUMNS) -> Iterator[tuple]:
        """Raw column values of every row, in name order (nothing when the file does not exist)."""
        if self._db is None:
            return iter(())
        return iter(self._db.execute(f"SELECT {', '.join(columns)} FROM models ORDER BY name"))

    def signature(self, name: str) -> bytes | None:
        if self._db is None:
            return None
        found = self._db.execute("SELECT signature FROM signatures WHERE name = ?", (name,)).fetchone()
        return found[0] if found else None

    def get(self, name: str) -> Row | None:
        if self._db is None:
            return None
        found = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM models WHERE name = ?",
                                 (name,)).fetchone()
        return _decode(found, self.signature(name)) if found else None

    def all(self) -> list[Row]:
        return [_decode(r, self.signature(r[0])) for r in self.rows()]

    def put(self, rows: list[Row], *, replace: bool) -> None:
        """Insert ``rows`` in one transaction; an existing name is an error unless ``replace``."""
        with self.transaction() as db:
            for row in rows:
                if not replace and db.execute("SELECT 1 FROM models WHERE name = ?",
                                              (row.name,)).fetchone():
                    raise TensorguardError(f"{self.path}: {row.name!r} is already in the catalogue "
                                           "(remove it first, or replace it)")
                db.execute("DELETE FROM signatures WHERE name = ?", (row.name,))
                db.execute(f"INSERT OR REPLACE INTO models ({', '.join(COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(COLUMNS))})", _encode(row))
                if row.signature is not None:
                    db.execute("INSERT INTO signatures (name, signature) VALUES (?, ?)",
                               (row.name, row.signature))

    def delete(self, name: str) -> bool:
        with self.transaction() as db:
            db.execute("DELETE FROM signatures WHERE name = ?", (name,))
            return db.execute("DELETE FROM models WHERE name = ?", (name,)).rowcount > 0

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
