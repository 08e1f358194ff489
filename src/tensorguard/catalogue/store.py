"""The catalogue file: SQLite tables of known models, versioned, written in transactions.

* **Schema** ``SCHEMA_VERSION`` is kept in ``PRAGMA user_version``; a file from a newer
  tensorguard is refused, a new file is initialised.
* **Concurrency**: write-ahead logging, so any number of readers (``scan``) proceed while one
  writer (``index add``) commits; writers wait up to ``BUSY_TIMEOUT_S`` for each other.
* **Atomicity**: every change is one transaction, committed only when all its rows are written;
  an interrupt or a crash before that leaves the file as it was.
* **Fast reads**: what ``scan`` reads for every row (name, path, hash, features, retrieval
  vector, a token-list id) sits apart from the signatures and the JSON documents; token lists are
  stored once, shared by the rows of one tokenizer.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorguard.errors import TensorguardError, UsageError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
DB_NAME = "catalogue.sqlite"
ENVIRONMENT = "TENSORGUARD_CATALOGUE"

_SCHEMA = """
CREATE TABLE token_lists (
    id INTEGER PRIMARY KEY,
    tokens TEXT NOT NULL UNIQUE      -- JSON list: the tokens of a retrieval vector
);
CREATE TABLE models (               -- what scan reads of every row first, the documents after
    name TEXT PRIMARY KEY,
    path TEXT,                       -- where the weights were read from (NULL: fingerprint only)
    header_hash TEXT,                -- see entries.header_hash
    features BLOB,                   -- the fingerprint's 14 features as little-endian float64
    tokens INTEGER REFERENCES token_lists(id),
    retrieval BLOB,                  -- float16 unit vector: embedding Gram over those tokens
    labels TEXT NOT NULL,            -- JSON object: base, family, licence, any free-form tag
    architecture TEXT,               -- JSON: the inspect summary
    fingerprint TEXT,                -- JSON: the paper's fingerprint (published file format)
    added_at TEXT NOT NULL
);
CREATE TABLE signatures (
    name TEXT PRIMARY KEY REFERENCES models(name) ON DELETE CASCADE,
    signature BLOB NOT NULL          -- tensorguard.signatures bytes
);
"""
_DOCUMENT = ("name", "labels", "path", "header_hash", "architecture", "fingerprint", "features",
             "retrieval", "added_at")


def default_db_path() -> Path:
    """``$TENSORGUARD_CATALOGUE``, else ``$XDG_CACHE_HOME/tensorguard/catalogue.sqlite`` (``~/.cache``)."""
    if env := os.environ.get(ENVIRONMENT):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tensorguard" / DB_NAME


@dataclass(frozen=True)
class Row:
    """One model's row, decoded only as far as JSON (arrays stay bytes). A row read back from
    the file carries its signature's size, not the signature (``Store.signature`` reads that)."""

    name: str
    labels: dict[str, str]
    path: str | None
    header_hash: str | None
    architecture: dict[str, Any] | None
    fingerprint: dict[str, Any] | None
    features: bytes | None
    signature: bytes | None
    retrieval_tokens: tuple[str, ...] | None
    retrieval: bytes | None
    added_at: str
    signature_size: int | None = None

    @property
    def signature_bytes(self) -> int | None:
        return len(self.signature) if self.signature is not None else self.signature_size


@dataclass(frozen=True)
class Light:
    """What ``scan`` reads of every row: ``tokens`` indexes ``Store.token_lists()``."""

    names: list[str]
    paths: list[str | None]
    hashes: list[str | None]
    features: list[bytes | None]
    tokens: list[int | None]
    retrieval: list[bytes | None]


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


class Store:
    """An open catalogue file. ``Store.open(path)`` on a missing file is an empty, read-only
    catalogue (nothing is created until the first write)."""

    def __init__(self, path: Path, connection: sqlite3.Connection | None) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path: str | Path | None = None, *, writable: bool = False) -> Store:
        path = Path(path) if path is not None else default_db_path()
        if path.is_dir():
            raise UsageError(f"{path}: is a directory; {{catalogue}} names a catalogue file", "catalogue")
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
        db = self._connection()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise TensorguardError(f"{self.path}: catalogue schema {version} is newer than this "
                                   f"tensorguard's ({SCHEMA_VERSION}); upgrade tensorguard")
        if version == 0 and tables:
            raise TensorguardError(f"{self.path}: an SQLite file that is not a tensorguard catalogue")
        if writable and version == 0:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            with self.transaction() as tx:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise TensorguardError(f"{self.path}: the catalogue is not open")
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception (KeyboardInterrupt too) rolls back."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ---- reading

    def light(self, *, vectors: bool = True) -> Light:
        """The columns ``scan`` reads of every row, in name order. Without ``vectors`` the
        retrieval vectors stay in the file (``retrieval`` holds ``b""`` for a row that has one;
        ``vector_chunks`` streams them)."""
        out = Light([], [], [], [], [], [])
        column = "retrieval" if vectors else "CASE WHEN retrieval IS NULL THEN NULL ELSE x'' END"
        if self._db is not None:
            for name, path, digest, features, tokens, retrieval in self._db.execute(
                    f"SELECT name, path, header_hash, features, tokens, {column} FROM models ORDER BY name"):
                out.names.append(name)
                out.paths.append(path)
                out.hashes.append(digest)
                out.features.append(features)
                out.tokens.append(tokens)
                out.retrieval.append(retrieval)
        return out

    def vector_chunks(self, size: int) -> Iterator[list[tuple[str, int | None, bytes | None]]]:
        """Every row's name, token-list id and retrieval vector, in name order, ``size`` rows at a
        time (one query: memory bounded by the chunk, whatever the catalogue's size)."""
        if self._db is None:
            return
        cursor = self._db.execute("SELECT name, tokens, retrieval FROM models ORDER BY name")
        while batch := cursor.fetchmany(size):
            yield batch

    def token_lists(self) -> dict[int, tuple[str, ...]]:
        if self._db is None:
            return {}
        return {i: tuple(json.loads(t)) for i, t in self._db.execute("SELECT id, tokens FROM token_lists")}

    def labels(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """The labels of the rows ``names`` (those that exist)."""
        if self._db is None or not names:
            return {}
        marks = ", ".join("?" * len(names))
        return {n: json.loads(lab) for n, lab in
                self._db.execute(f"SELECT name, labels FROM models WHERE name IN ({marks})", list(names))}

    def signature(self, name: str) -> bytes | None:
        if self._db is None:
            return None
        found = self._db.execute("SELECT signature FROM signatures WHERE name = ?", (name,)).fetchone()
        return found[0] if found else None

    def _rows(self, where: str = "", args: tuple[object, ...] = ()) -> list[Row]:
        if self._db is None:
            return []
        lists = self.token_lists()
        query = (f"SELECT {', '.join('m.' + c for c in _DOCUMENT)}, m.tokens, length(s.signature) "
                 f"FROM models m LEFT JOIN signatures s ON s.name = m.name {where} ORDER BY m.name")
        rows = []
        for values in self._db.execute(query, args):
            d = dict(zip(_DOCUMENT, values[:len(_DOCUMENT)], strict=True))
            tokens, size = values[len(_DOCUMENT):]
            rows.append(Row(d["name"], json.loads(d["labels"]), d["path"], d["header_hash"],
                            json.loads(d["architecture"]) if d["architecture"] else None,
                            json.loads(d["fingerprint"]) if d["fingerprint"] else None, d["features"],
                            None, lists.get(tokens), d["retrieval"], d["added_at"], size))
        return rows

    def get(self, name: str) -> Row | None:
        found = self._rows("WHERE m.name = ?", (name,))
        return found[0] if found else None

    def all(self) -> list[Row]:
        return self._rows()

    # ---- writing

    def put(self, rows: Sequence[Row], *, replace: bool) -> None:
        """Insert ``rows`` in one transaction; an existing name is an error unless ``replace``."""
        with self.transaction() as db:
            for row in rows:
                if not replace and db.execute("SELECT 1 FROM models WHERE name = ?",
                                              (row.name,)).fetchone():
                    raise UsageError(f"{self.path}: {row.name!r} is already in the catalogue (remove it "
                                     "first, or add it with {replace})", "replace")
                tokens = None
                if row.retrieval_tokens is not None:
                    text = _json(list(row.retrieval_tokens))
                    db.execute("INSERT OR IGNORE INTO token_lists (tokens) VALUES (?)", (text,))
                    tokens = db.execute("SELECT id FROM token_lists WHERE tokens = ?", (text,)).fetchone()[0]
                db.execute("DELETE FROM signatures WHERE name = ?", (row.name,))
                db.execute(f"INSERT OR REPLACE INTO models ({', '.join(_DOCUMENT)}, tokens) "
                           f"VALUES ({', '.join('?' * (len(_DOCUMENT) + 1))})",
                           (row.name, _json(row.labels), row.path, row.header_hash,
                            _json(row.architecture), _json(row.fingerprint), row.features,
                            row.retrieval, row.added_at, tokens))
                if row.signature is not None:
                    db.execute("INSERT INTO signatures (name, signature) VALUES (?, ?)",
                               (row.name, row.signature))
            self._drop_unused_token_lists(db)

    def delete(self, name: str) -> bool:
        with self.transaction() as db:
            db.execute("DELETE FROM signatures WHERE name = ?", (name,))
            deleted = db.execute("DELETE FROM models WHERE name = ?", (name,)).rowcount > 0
            self._drop_unused_token_lists(db)
        return deleted

    @staticmethod
    def _drop_unused_token_lists(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM token_lists WHERE id NOT IN "
                   "(SELECT tokens FROM models WHERE tokens IS NOT NULL)")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
