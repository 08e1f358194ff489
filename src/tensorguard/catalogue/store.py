"""The catalogue file: SQLite tables of known models, versioned, written in transactions.

* **What a file must be**: a regular file (a FIFO, a directory or a device is refused from its
  ``stat``, before SQLite opens it: SQLite would block on a FIFO), holding an SQLite database with
  tensorguard's tables. An empty file, another program's database and a file from a newer
  tensorguard are refused, never initialised or changed.
* **Schema** ``SCHEMA_VERSION`` is kept in ``PRAGMA user_version``; a new file is initialised.
* **Reading never writes**: ``list``, ``show`` and ``scan`` open the file read-only, so a read-only
  file or folder reads normally and reading creates nothing.
* **Concurrency**: write-ahead logging, so any number of readers (``scan``) proceed while one
  writer (``index add``) commits; a writer waits at most ``timeout`` seconds for another (a notice
  after the first ``NOTICE_AFTER_S``), then gives up with ``CatalogueBusyError``.
* **Atomicity**: every change is one transaction, committed only when all its rows are written;
  an interrupt or a crash before that leaves the file as it was.
* **Damaged rows** (bad JSON, wrong blob sizes, non-finite features, a missing token list, no
  name) are skipped with a warning naming the entry; ``check`` lists them and ``repair`` removes
  them, so one bad row never hides the others.
* **Fast reads**: what ``scan`` reads for every row (name, path, hash, features, retrieval
  vector, a token-list id) sits apart from the signatures and the JSON documents; token lists are
  stored once, shared by the rows of one tokenizer.
* **Retrieval index** (schema 2): every row's retrieval sketch (``sketches``) in blocks of
  ``BLOCK_ROWS`` rows of one token list, one BLOB per column per block, kept up to date by every
  write in the write's own transaction, and an SQLite index of the light columns (``light`` reads
  it instead of the rows while the retrieval index is valid). Triggers mark it stale when the
  rows change by any other means (another program); a stale index is never read (``scan``
  streams every vector, as a schema-1 file does) and the next write rebuilds it. Opening a
  schema-1 file for writing migrates it (builds the index once).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorguard.catalogue.sketches import BLOCK_ROWS, DIMS, Block, sketch
from tensorguard.errors import TensorguardError, UsageError
from tensorguard.fingerprints.schema import FEATURE_KEYS, MAX_MAGNITUDE
from tensorguard.inputs import special_file

SCHEMA_VERSION = 2
#: How long a writer waits for another writer (``timeout``), by default.
BUSY_TIMEOUT_S = 30.0
#: A writer kept waiting this long says so (once) on the ``tensorguard`` logger.
NOTICE_AFTER_S = 0.25
DB_NAME = "catalogue.sqlite"
ENVIRONMENT = "TENSORGUARD_CATALOGUE"
#: Stored features: the fingerprint's values as little-endian float64, each within +-MAX_FEATURE.
FEATURE_COUNT, MAX_FEATURE = len(FEATURE_KEYS), MAX_MAGNITUDE
_SQLITE_MAGIC = b"SQLite format 3\x00"
_log = logging.getLogger("tensorguard")

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
#: Schema 2: the retrieval index (``sketches``) and the triggers that mark it stale.
_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS retrieval_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    valid INTEGER NOT NULL           -- 0: rows changed outside tensorguard; rebuilt at the next write
);
CREATE TABLE IF NOT EXISTS retrieval_blocks (  -- sketches of up to BLOCK_ROWS rows of a token list
    id INTEGER PRIMARY KEY,
    tokens INTEGER NOT NULL,
    rowids BLOB NOT NULL,            -- int64: the rows of models
    codes BLOB NOT NULL,             -- int8 (rows, DIMS)
    stats BLOB NOT NULL,             -- float32 (rows, 5): see sketches.Block
    weights BLOB NOT NULL            -- int8 (rows, 2, tokens): each token's squares and sum
);
INSERT OR IGNORE INTO retrieval_state (id, valid) VALUES (0, 1);
CREATE TRIGGER IF NOT EXISTS retrieval_stale_insert AFTER INSERT ON models
    BEGIN UPDATE retrieval_state SET valid = 0; END;
CREATE TRIGGER IF NOT EXISTS retrieval_stale_update AFTER UPDATE ON models
    BEGIN UPDATE retrieval_state SET valid = 0; END;
CREATE TRIGGER IF NOT EXISTS retrieval_stale_delete AFTER DELETE ON models
    BEGIN UPDATE retrieval_state SET valid = 0; END;
CREATE TRIGGER IF NOT EXISTS retrieval_stale_tokens AFTER UPDATE ON token_lists
    BEGIN UPDATE retrieval_state SET valid = 0; END;
CREATE TRIGGER IF NOT EXISTS retrieval_stale_new_tokens AFTER INSERT ON token_lists
    BEGIN UPDATE retrieval_state SET valid = 0; END;
CREATE TRIGGER IF NOT EXISTS retrieval_stale_old_tokens AFTER DELETE ON token_lists
    BEGIN UPDATE retrieval_state SET valid = 0; END;
-- the light columns but the vector's, in name order: read without the rows' pages, the
-- vector's presence and size then known from the (valid) index
CREATE INDEX IF NOT EXISTS retrieval_light ON models (name, path, header_hash, features, tokens);
"""
_INDEX_OBJECTS = {"retrieval_state", "retrieval_blocks", "retrieval_light", "retrieval_stale_insert",
                  "retrieval_stale_update", "retrieval_stale_delete", "retrieval_stale_tokens",
                  "retrieval_stale_new_tokens", "retrieval_stale_old_tokens"}
#: A retrieval column's size, read in its place (-1: not a blob).
_VECTOR_SIZE = ("CASE WHEN retrieval IS NULL THEN NULL "
                "WHEN typeof(retrieval) = 'blob' THEN length(retrieval) ELSE -1 END")
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
    rowids: list[int]


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


class CatalogueBusyError(TensorguardError):
    """Another process kept the catalogue locked for longer than the timeout."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        super().__init__(f"{path}: the catalogue is busy: another process has been writing it for "
                         f"{timeout:g} s; try again later, or wait longer with timeout=")

    def for_cli(self, flags: Any) -> str:
        return str(self).replace("timeout=", "--timeout SECONDS")


@dataclass(frozen=True)
class Damage:
    """A row that cannot be read as an entry: ``rowid`` finds it even without a name."""

    rowid: int
    name: str | None
    problem: str

    def __str__(self) -> str:
        return f"entry {self.name!r} (row {self.rowid}): {self.problem}" if self.name is not None \
            else f"row {self.rowid} (no name): {self.problem}"


def _file_problem(path: Path) -> str | None:
    """Why ``path`` (which exists) cannot be a catalogue file, from its type and first bytes."""
    if path.is_dir():
        return "is a directory, not a catalogue file"
    if what := special_file(path):
        return f"is {what}, not a catalogue file"
    with path.open("rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if not head:
        return "is an empty file (0 bytes), not a tensorguard catalogue; remove it, or name another file"
    if head != _SQLITE_MAGIC:
        return "is not an SQLite file, so not a tensorguard catalogue"
    return None


def _expected_columns() -> dict[str, list[str]]:
    """Every table of ``_SCHEMA`` with its columns (read off the schema itself)."""
    with sqlite3.connect(":memory:") as db:
        db.executescript(_SCHEMA)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}


class Store:
    """An open catalogue file. ``Store.open(path)`` on a missing file is an empty, read-only
    catalogue (nothing is created until the first write). Every SQLite error becomes a one-line
    ``TensorguardError`` naming the file."""

    def __init__(self, path: Path, connection: sqlite3.Connection | None,
                 timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self._db = connection
        self.timeout = timeout
        self.damage: dict[int, Damage] = {}  # the damaged rows met so far, by rowid

    @classmethod
    def open(cls, path: str | Path | None = None, *, writable: bool = False,
             timeout: float = BUSY_TIMEOUT_S) -> Store:
        path = Path(path) if path is not None else default_db_path()
        if not math.isfinite(timeout) or timeout < 0:
            from tensorguard.errors import OptionError

            raise OptionError("timeout", timeout, "expected a number of seconds, at least 0")
        try:
            exists = path.exists() or path.is_symlink()
            problem = _file_problem(path) if exists else None
        except OSError as exc:
            raise TensorguardError(f"{path}: cannot read the catalogue ({exc.strerror or exc})") from None
        if problem:
            raise UsageError(f"{path}: {problem} ({{catalogue}} names an SQLite catalogue file)", "catalogue")
        if not exists and not writable:
            return cls(path, None, timeout)
        if writable:
            _check_writable(path, exists)
        store = cls(path, None, timeout)
        with store._errors():
            try:
                if writable:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    store._db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
                else:
                    store._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                                timeout=timeout, isolation_level=None)
                store._db.text_factory = _text  # a column of bad UTF-8 must not stop every read
                store._check_schema(writable)
            except BaseException:
                store.close()
                raise
        return store

    def _check_schema(self, writable: bool) -> None:
        db = self._connection()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise TensorguardError(f"{self.path}: catalogue schema {version} is newer than this "
                                   f"tensorguard's ({SCHEMA_VERSION}); upgrade tensorguard")
        if version == 0 and tables:
            raise TensorguardError(f"{self.path}: an SQLite database of another program (tables "
                                   f"{', '.join(sorted(tables))}), not a tensorguard catalogue")
        if version == 0 and not writable:  # an empty SQLite file: an empty catalogue
            self.close()
            return
        if writable and version == 0:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            with self.transaction() as tx:
                for statement in _statements(_SCHEMA + _INDEX_SCHEMA):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        expected = _expected_columns()
        if not tables & expected.keys():
            raise TensorguardError(f"{self.path}: an SQLite database of another program (tables "
                                   f"{', '.join(sorted(tables)) or 'none'}), not a tensorguard catalogue")
        for table, columns in expected.items():
            found = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            if missing := [c for c in columns if c not in found]:
                raise TensorguardError(
                    f"{self.path}: not a tensorguard catalogue of schema {version}: "
                    + (f"table {table!r} is missing" if not found
                       else f"table {table!r} lacks column(s) {', '.join(missing)}"))
        objects = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        if writable and (version < SCHEMA_VERSION or not objects >= _INDEX_OBJECTS):  # add the index
            with self.transaction() as tx:
                for statement in _statements(_INDEX_SCHEMA):
                    tx.execute(statement)
                self._rebuild_index(tx)
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise TensorguardError(f"{self.path}: the catalogue is not open")
        return self._db

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as one line naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise CatalogueBusyError(self.path, self.timeout) from None
            if "readonly" in text or "read-only" in text:
                raise TensorguardError(f"{self.path}: the catalogue is read-only (the file or its "
                                       f"folder): {text}") from None
            if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
                raise TensorguardError(f"{self.path}: cannot open the catalogue ({text})") from None
            raise TensorguardError(f"{self.path}: a damaged catalogue file ({text}); keep a copy and "
                                   "rebuild it, or recover its rows with sqlite3's .recover") from None
        except OSError as exc:
            raise TensorguardError(f"{self.path}: cannot open the catalogue ({exc.strerror or exc})") \
                from None

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Every row ``sql`` returns (none when the file does not exist)."""
        if self._db is None:
            return []
        with self._errors():
            return self._db.execute(sql, args).fetchall()

    def _begin(self, db: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting at most ``timeout`` for another writer (a notice once)."""
        deadline = time.monotonic() + self.timeout
        db.execute(f"PRAGMA busy_timeout = {int(NOTICE_AFTER_S * 1000)}")
        try:
            told = False
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() >= deadline:
                        raise CatalogueBusyError(self.path, self.timeout) from None
                if not told:
                    _log.warning("%s: another process is writing the catalogue; waiting up to %g s",
                                 self.path, self.timeout)
                    told = True
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception (KeyboardInterrupt too) rolls back."""
        db = self._connection()
        with self._errors():
            self._begin(db)
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ---- reading (damaged rows are skipped, recorded in ``damage`` and logged once)

    def _damaged(self, rowid: int, name: object, problem: str) -> None:
        if rowid not in self.damage:
            self.damage[rowid] = Damage(rowid, name if isinstance(name, str) else None, problem)

    def warn(self) -> None:
        """Say (on the ``tensorguard`` logger) which damaged rows were skipped."""
        for found in self.damage.values():
            _log.warning("%s: %s; skipped (tensorguard index repair lists and removes damaged entries)",
                         self.path, found)

    def record_damage(self, name: str, problem: str) -> None:
        """Record the row ``name`` as damaged (a problem found above the store)."""
        for (rowid,) in self._query("SELECT rowid FROM models WHERE name = ?", (name,)):
            self._damaged(rowid, name, problem)

    def light(self, *, vectors: bool = True) -> Light:
        """The columns ``scan`` reads of every row, in name order (damaged rows left out). Without
        ``vectors`` the retrieval vectors stay in the file (``retrieval`` holds ``b""`` for a row
        that has one; ``vector_chunks`` streams them)."""
        lists = self.token_lists()
        # without vectors, a vector's size stands for it (checked as the vector would be)
        found = None if vectors else self._light_from_index(lists)
        if found is None:
            rows = self._query(f"SELECT rowid, name, path, header_hash, features, tokens, "
                               f"{'retrieval' if vectors else _VECTOR_SIZE}, {_plain_row(lists)} "
                               "FROM models ORDER BY name")
            found = rows, [r[6] for r in rows]
        rows = found[0]
        column: list[Any] = found[1]
        # the checks SQLite cannot make (features finite and in range), on every plain row at once
        plain = [r for r in rows if r[7] and r[4] is not None]
        values = np.frombuffer(b"".join(r[4] for r in plain), dtype="<f8").reshape(len(plain), FEATURE_COUNT)
        in_range = (np.abs(values) <= MAX_FEATURE).all(axis=1)  # NaN is not
        odd = {r[0] for r, ok in zip(plain, in_range, strict=True) if not ok}
        sizes = {i: len(t) * (len(t) - 1) for i, t in lists.items()}
        for r, vector in zip(rows, column, strict=True):
            if vector is not None:  # a vector (or, without vectors, its size): of its list's size?
                size = vector if not vectors else len(vector) if isinstance(vector, bytes) else -1
                if sizes.get(r[5]) != size:
                    odd.add(r[0])
        keep, kept = [], []
        for row, vector in zip(rows, column, strict=True):
            if not row[7] or row[0] in odd:  # the full checks, for their message
                rowid, name, path, digest, features, tokens = row[:6]
                stands: object = vector if vectors or vector is None else \
                    Length(vector) if vector >= 0 else "not a blob"
                if problem := _light_problem(name, path, digest, features, tokens, stands, lists):
                    self._damaged(rowid, name, problem)
                    continue
            keep.append(row)
            kept.append(vector)
        return Light([r[1] for r in keep], [r[2] for r in keep], [r[3] for r in keep], [r[4] for r in keep],
                     [r[5] for r in keep], kept if vectors else [None if v is None else b"" for v in kept],
                     [r[0] for r in keep])

    @staticmethod
    @contextmanager
    def _snapshot(db: sqlite3.Connection) -> Iterator[None]:
        """Several reads from one snapshot of the file (a read transaction, unless one is open)."""
        if db.in_transaction:
            yield
            return
        db.execute("BEGIN")
        try:
            yield
        finally:
            db.execute("COMMIT")

    def _light_from_index(self, lists: dict[int, tuple[str, ...]]
                          ) -> tuple[list[tuple[Any, ...]], list[int | None]] | None:
        """``light``'s rows with vector sizes, from the index ``retrieval_light`` (no row's own page
        read) when the retrieval index is valid: a row it holds has a vector of its list's size
        (checked when it was indexed, and nothing changed since); the others' sizes are read."""
        if self._db is None:
            return None
        with self._errors(), self._snapshot(self._db):  # the rows and the index from one snapshot
            objects = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if not objects >= _INDEX_OBJECTS or \
                    self._db.execute("SELECT valid FROM retrieval_state").fetchone() != (1,):
                return None
            rows = self._db.execute(f"SELECT rowid, name, path, header_hash, features, tokens, NULL, "
                                    f"{_plain_row(lists)} FROM models INDEXED BY retrieval_light "
                                    "ORDER BY name").fetchall()
            blocks = [np.frombuffer(b, dtype="<i8") for (b,) in
                      self._db.execute("SELECT rowids FROM retrieval_blocks") if isinstance(b, bytes)]
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            indexed = np.isin(ids, np.concatenate(blocks)) if blocks else np.zeros(len(rows), dtype=bool)
            rest = ids[~indexed].tolist()
            sizes: dict[int, int | None] = {}
            for start in range(0, len(rest), 900):
                part = rest[start:start + 900]
                sizes.update(self._db.execute(f"SELECT rowid, {_VECTOR_SIZE} FROM models WHERE rowid IN "
                                              f"({', '.join('?' * len(part))})", part).fetchall())
        size_of = {i: len(t) * (len(t) - 1) for i, t in lists.items()}
        return rows, [size_of.get(r[5], -1) if hit else sizes.get(r[0])
                      for r, hit in zip(rows, indexed.tolist(), strict=True)]

    def vector_chunks(self, size: int) -> Iterator[list[tuple[str, int | None, bytes | None]]]:
        """Every undamaged row's name, token-list id and retrieval vector, in name order, ``size``
        rows at a time (one query: memory bounded by the chunk, whatever the catalogue's size)."""
        if self._db is None:
            return
        with self._errors():
            cursor = self._db.execute("SELECT rowid, name, tokens, retrieval FROM models ORDER BY name")
            while batch := cursor.fetchmany(size):
                yield [(name, tokens, vector) for rowid, name, tokens, vector in batch
                       if rowid not in self.damage]

    def vectors(self, rowids: Sequence[int]) -> list[tuple[int, str, int | None, bytes | None]]:
        """The rows ``rowids``' rowid, name, token-list id and retrieval vector (those that exist)."""
        out = []
        for start in range(0, len(rowids), 900):
            part = [int(r) for r in rowids[start:start + 900]]
            out += self._query(f"SELECT rowid, name, tokens, retrieval FROM models WHERE rowid IN "
                               f"({', '.join('?' * len(part))})", part)
        return out

    def sketch_blocks(self) -> list[Block] | None:
        """The retrieval index's blocks, or ``None`` when the file has no usable index (schema 1,
        marked stale, or a block that does not read as one): the caller then reads every vector."""
        if self._db is None:
            return None
        with self._errors(), self._snapshot(self._db):  # the state and the blocks from one snapshot
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "retrieval_state" not in tables or \
                    self._db.execute("SELECT valid FROM retrieval_state").fetchone() != (1,):
                return None
            rows = self._db.execute("SELECT tokens, rowids, codes, stats, weights FROM retrieval_blocks "
                                    "ORDER BY id").fetchall()
        try:
            return [Block.from_columns(t, r, c, s, w) for t, r, c, s, w in rows]
        except (ValueError, TypeError):
            return None

    def token_lists(self) -> dict[int, tuple[str, ...]]:
        """The readable token lists by id (a damaged one is left out: its rows read as damaged)."""
        return _token_lists(self._query("SELECT id, tokens FROM token_lists"))

    def labels(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """The labels of the rows ``names`` (those that exist and are readable)."""
        if not names:
            return {}
        marks = ", ".join("?" * len(names))
        out = {}
        query = f"SELECT rowid, name, labels FROM models WHERE name IN ({marks})"
        for rowid, name, text in self._query(query, list(names)):
            labels = _loads(text)
            if _is_labels(labels):
                out[name] = labels
            else:
                self._damaged(rowid, name, "labels are not a JSON object of text values")
        return out

    def signature(self, name: str) -> bytes | None:
        found = self._query("SELECT signature FROM signatures WHERE name = ?", (name,))
        return found[0][0] if found and isinstance(found[0][0], bytes) else None

    def _rows(self, where: str = "", args: tuple[object, ...] = ()) -> list[Row]:
        lists = self.token_lists()
        query = (f"SELECT m.rowid, {', '.join('m.' + c for c in _DOCUMENT)}, m.tokens, length(s.signature) "
                 f"FROM models m LEFT JOIN signatures s ON s.name = m.name {where} ORDER BY m.name")
        rows = []
        for values in self._query(query, args):
            rowid, values = values[0], values[1:]
            d = dict(zip(_DOCUMENT, values[:len(_DOCUMENT)], strict=True))
            tokens, size = values[len(_DOCUMENT):]
            row, problem = _decode(d, tokens, size, lists)
            if row is None:
                self._damaged(rowid, d["name"], problem)
            else:
                rows.append(row)
        return rows

    def get(self, name: str) -> Row | None:
        found = self._rows("WHERE m.name = ?", (name,))
        return found[0] if found else None

    def all(self) -> list[Row]:
        return self._rows()

    def check(self) -> list[Damage]:
        """Every damaged row (each column read and checked, signatures parsed), by rowid."""
        from tensorguard.signatures import Signature

        self.damage = {}
        self._rows()
        self.light()
        for rowid, name, blob in self._query(
                "SELECT m.rowid, m.name, s.signature FROM models m JOIN signatures s ON s.name = m.name"):
            try:
                Signature.from_bytes(blob if isinstance(blob, bytes) else b"", str(name))
            except TensorguardError as exc:
                self._damaged(rowid, name, str(exc).partition(": ")[2] or "a corrupt signature")
        return sorted(self.damage.values(), key=lambda d: d.rowid)

    # ---- writing

    def put(self, rows: Sequence[Row], *, replace: bool) -> None:
        """Insert ``rows`` in one transaction; an existing name is an error unless ``replace``."""
        with self.transaction() as db:
            valid = self._index_valid(db)
            removed, added = [], []
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
                removed += [r for (r,) in db.execute("SELECT rowid FROM models WHERE name = ?", (row.name,))]
                cursor = db.execute(f"INSERT OR REPLACE INTO models ({', '.join(_DOCUMENT)}, tokens) "
                           f"VALUES ({', '.join('?' * (len(_DOCUMENT) + 1))})",
                           (row.name, _json(row.labels), row.path, row.header_hash,
                            _json(row.architecture), _json(row.fingerprint), row.features,
                            row.retrieval, row.added_at, tokens))
                added.append((cursor.lastrowid, tokens, row.retrieval))
                if row.signature is not None:
                    db.execute("INSERT INTO signatures (name, signature) VALUES (?, ?)",
                               (row.name, row.signature))
            self._update_index(db, valid, removed, added)
            self._drop_unused(db)
            db.execute("UPDATE retrieval_state SET valid = 1")

    def delete(self, name: str) -> bool:
        with self.transaction() as db:
            valid = self._index_valid(db)
            removed = [r for (r,) in db.execute("SELECT rowid FROM models WHERE name = ?", (name,))]
            db.execute("DELETE FROM signatures WHERE name = ?", (name,))
            deleted = db.execute("DELETE FROM models WHERE name = ?", (name,)).rowcount > 0
            self._update_index(db, valid, removed, [])
            self._drop_unused(db)
            db.execute("UPDATE retrieval_state SET valid = 1")
        return deleted

    def delete_rows(self, damage: Sequence[Damage]) -> None:
        """Remove damaged rows (by rowid) in one transaction, with their signatures."""
        with self.transaction() as db:
            valid = self._index_valid(db)
            for d in damage:
                db.execute("DELETE FROM signatures WHERE name = (SELECT name FROM models WHERE rowid = ?)",
                           (d.rowid,))
                db.execute("DELETE FROM models WHERE rowid = ?", (d.rowid,))
            self._update_index(db, valid, [d.rowid for d in damage], [])
            self._drop_unused(db)
            db.execute("UPDATE retrieval_state SET valid = 1")

    @staticmethod
    def _drop_unused(db: sqlite3.Connection) -> None:
        """Token lists no row uses, and signatures of no row."""
        db.execute("DELETE FROM token_lists WHERE id NOT IN "
                   "(SELECT tokens FROM models WHERE tokens IS NOT NULL)")
        db.execute("DELETE FROM signatures WHERE name IS NULL OR name NOT IN "
                   "(SELECT name FROM models WHERE name IS NOT NULL)")

    # ---- the retrieval index, kept in the writing transaction

    @staticmethod
    def _index_valid(db: sqlite3.Connection) -> bool:
        return bool(db.execute("SELECT valid FROM retrieval_state").fetchone() == (1,))

    def _update_index(self, db: sqlite3.Connection, valid: bool, removed: Sequence[int],
                      added: Sequence[tuple[int | None, int | None, bytes | None]]) -> None:
        """Drop the rows ``removed`` from the index and add the rows ``added`` (rowid, token-list
        id, vector); a stale index (changed outside tensorguard) is rebuilt whole instead."""
        try:
            if valid:
                self._change_index(db, removed, added)
                return
        except ValueError:  # a block that does not read as one: rebuilt
            pass
        self._rebuild_index(db)

    def _change_index(self, db: sqlite3.Connection, removed: Sequence[int],
                      added: Sequence[tuple[int | None, int | None, bytes | None]]) -> None:
        if db.execute(_ODD_BLOCKS).fetchone()[0]:
            raise ValueError("a retrieval block's columns disagree")
        if removed:
            gone = np.asarray(sorted(set(removed)), dtype=np.int64)
            for block_id, rowids in db.execute("SELECT id, rowids FROM retrieval_blocks").fetchall():
                ids = np.frombuffer(rowids, dtype="<i8")
                if not np.isin(ids, gone).any():
                    continue
                block = self._read_block(db, block_id)
                keep = ~np.isin(block.rowids, gone)
                db.execute("DELETE FROM retrieval_blocks WHERE id = ?", (block_id,))
                if keep.any():
                    self._write_block(db, block.take(keep), block_id)
        lists = _list_sizes(db)
        by_list: dict[int, list[tuple[int, np.ndarray]]] = {}
        for rowid, tokens, blob in added:
            if type(tokens) is int and (vector := _indexable(tokens, blob, lists)) is not None:
                by_list.setdefault(tokens, []).append((int(rowid or 0), vector))
        for tokens, items in sorted(by_list.items()):
            fresh = sketch(tokens, np.asarray([r for r, _ in items]), np.stack([v for _, v in items]))
            last = db.execute("SELECT id FROM retrieval_blocks WHERE tokens = ? ORDER BY id DESC LIMIT 1",
                              (tokens,)).fetchone()
            if last is not None:  # top up the list's last block
                old = self._read_block(db, last[0])
                fresh = Block.concat(tokens, [old, fresh])
                db.execute("DELETE FROM retrieval_blocks WHERE id = ?", (last[0],))
            for start in range(0, len(fresh), BLOCK_ROWS):
                self._write_block(db, fresh.take(np.arange(start, min(len(fresh), start + BLOCK_ROWS))),
                                  last[0] if last is not None and start == 0 else None)
        db.execute("UPDATE retrieval_state SET valid = 1")

    def _rebuild_index(self, db: sqlite3.Connection) -> None:
        """Every row's sketch again (rows whose vector cannot be used are left out: ``scan``
        reads those rows' vectors itself)."""
        db.execute("DELETE FROM retrieval_blocks")
        lists = _list_sizes(db)
        for (tokens,) in db.execute("SELECT DISTINCT tokens FROM models WHERE tokens IS NOT NULL "
                                    "ORDER BY tokens").fetchall():
            cursor = db.execute("SELECT rowid, retrieval FROM models WHERE tokens = ? ORDER BY rowid",
                                (tokens,))
            while batch := cursor.fetchmany(BLOCK_ROWS):
                items = [(r, v) for r, blob in batch if (v := _indexable(tokens, blob, lists)) is not None]
                if items:
                    self._write_block(db, sketch(tokens, np.asarray([r for r, _ in items]),
                                                 np.stack([v for _, v in items])), None)
        db.execute("UPDATE retrieval_state SET valid = 1")

    def _read_block(self, db: sqlite3.Connection, block_id: int) -> Block:
        tokens, rowids, codes, stats, weights = db.execute(
            "SELECT tokens, rowids, codes, stats, weights FROM retrieval_blocks WHERE id = ?",
            (block_id,)).fetchone()
        return Block.from_columns(tokens, rowids, codes, stats, weights)

    @staticmethod
    def _write_block(db: sqlite3.Connection, block: Block, block_id: int | None) -> None:
        db.execute("INSERT INTO retrieval_blocks (id, tokens, rowids, codes, stats, weights) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (block_id, *block.to_columns()))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_writable(path: Path) -> None:
    """A read-only catalogue file or folder, said before any slow work (nothing is opened)."""
    _check_writable(path, path.exists())


def _check_writable(path: Path, exists: bool) -> None:
    """A read-only file or folder, said before SQLite fails half-way."""
    folder = path.parent if path.parent != Path() else Path(".")
    if exists and not os.access(path, os.W_OK):
        raise TensorguardError(f"{path}: the catalogue file is read-only; it can be listed and "
                               "scanned, not changed")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise TensorguardError(f"{path}: its folder {folder} is read-only (SQLite writes its journal "
                               "beside the file); the catalogue can be listed and scanned, not changed")


def _plain_row(lists: dict[int, tuple[str, ...]]) -> str:
    """An SQL test that a row's light columns pass ``_light_problem``'s checks, but the features'
    values and the vector's size (checked in bulk after)."""
    ids = ", ".join(map(str, lists))
    return ("(typeof(name) = 'text' AND name != '' AND typeof(path) IN ('text', 'null') "
            "AND typeof(header_hash) IN ('text', 'null') AND (features IS NULL OR "
            f"(typeof(features) = 'blob' AND length(features) = {8 * FEATURE_COUNT})) "
            f"AND (tokens IS NULL OR (typeof(tokens) = 'integer' AND tokens IN ({ids}))))")


def drop_index(db: sqlite3.Connection) -> None:
    """Remove the retrieval index and its triggers (the file keeps schema 1's tables)."""
    for kind, name in db.execute("SELECT type, name FROM sqlite_master WHERE name LIKE 'retrieval_%' "
                                 "AND type IN ('trigger', 'table', 'index')").fetchall():
        db.execute(f"DROP {kind.upper()} IF EXISTS {name}")


def _statements(script: str) -> list[str]:
    """The statements of ``script`` (a trigger's body keeps its own ``;``)."""
    out, part = [], ""
    for piece in script.split(";"):
        part += piece + ";"
        if sqlite3.complete_statement(part):
            if part.strip(" \n;"):
                out.append(part.strip())
            part = ""
    return out


#: Blocks whose columns' sizes disagree (``sketches.Block.from_columns`` would refuse them).
_ODD_BLOCKS = f"""SELECT count(*) FROM retrieval_blocks WHERE typeof(rowids) != 'blob'
    OR length(rowids) = 0 OR length(rowids) % 8 OR length(codes) != length(rowids) / 8 * {DIMS}
    OR length(stats) != length(rowids) / 8 * 20 OR length(weights) % (length(rowids) / 8 * 2)"""


def _token_lists(rows: Sequence[tuple[Any, ...]]) -> dict[int, tuple[str, ...]]:
    """The readable token lists of ``(id, JSON text)`` rows, by id."""
    out: dict[int, tuple[str, ...]] = {}
    for i, text in rows:
        tokens = _loads(text)
        if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
            out[i] = tuple(tokens)
    return out


def _list_sizes(db: sqlite3.Connection) -> dict[int, int]:
    """Tokens per readable token list, by id (inside a transaction)."""
    lists = _token_lists(db.execute("SELECT id, tokens FROM token_lists").fetchall())
    return {i: len(t) for i, t in lists.items()}


def _indexable(tokens: object, blob: object, lists: dict[int, int]) -> np.ndarray | None:
    """A row's vector as float32 when the index can hold it (right size, every value finite)."""
    if type(tokens) is not int or tokens not in lists or not isinstance(blob, bytes):
        return None
    n = lists[tokens]
    if n < 2 or len(blob) != n * (n - 1):
        return None
    vector = np.frombuffer(blob, dtype="<f2").astype(np.float32)
    return vector if np.isfinite(vector).all() else None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class Length(int):
    """A blob column's size, read in its place (``len`` is the size)."""

    def __len__(self) -> int:
        return int(self)


def _size(blob: object) -> str:
    """What a blob column holds, for a message: ``113 bytes``, ``text``, ``a number``."""
    return f"{len(blob)} bytes" if isinstance(blob, bytes | Length) else "text" if isinstance(blob, str) \
        else "a number"


def _loads(text: object) -> Any:
    """JSON text decoded, or ``None`` when it is not (a damaged column)."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _is_labels(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _light_problem(name: object, path: object, digest: object, features: object, tokens: object,
                   retrieval: object, lists: dict[int, tuple[str, ...]]) -> str | None:
    """Why a row's light columns cannot be used (``None``: they can)."""
    if not isinstance(name, str) or not name:
        return "no name" if name is None or name == "" else "its name is not text"
    if not isinstance(path, str | None) or not isinstance(digest, str | None):
        return "its path or header hash is not text"
    if features is not None:
        if not isinstance(features, bytes) or len(features) != 8 * FEATURE_COUNT:
            return f"its features are {_size(features)}, not {8 * FEATURE_COUNT} bytes"
        sizes = tuple(map(abs, struct.unpack(f"<{FEATURE_COUNT}d", features)))
        if not (math.isfinite(sum(sizes)) and max(sizes) <= MAX_FEATURE):  # a NaN makes the sum NaN
            return f"its features are not finite numbers within +-{MAX_FEATURE:g}"
    if tokens is not None and (type(tokens) is not int or tokens not in lists):
        return f"its token list {tokens!r} does not exist or is damaged"
    if retrieval is not None:
        if tokens is None:
            return "a retrieval vector without a token list"
        n = len(lists[tokens])
        if not isinstance(retrieval, bytes | Length) or len(retrieval) != n * (n - 1):
            return f"its retrieval vector is {_size(retrieval)}, not {n * (n - 1)} bytes for {n} tokens"
    return None


def _decode(d: dict[str, Any], tokens: object, size: object,
            lists: dict[int, tuple[str, ...]]) -> tuple[Row | None, str]:
    """A row from its columns, or ``None`` and the problem."""
    if problem := _light_problem(d["name"], d["path"], d["header_hash"], d["features"], tokens,
                                 d["retrieval"], lists):
        return None, problem
    labels = _loads(d["labels"])
    if not _is_labels(labels):
        return None, "labels are not a JSON object of text values"
    documents = {}
    for key in ("architecture", "fingerprint"):
        value = _loads(d[key]) if d[key] is not None else None
        if d[key] is not None and not isinstance(value, dict):
            return None, f"its {key} is not a JSON object"
        documents[key] = value
    if not isinstance(d["added_at"], str):
        return None, "its date added is not text"
    return Row(d["name"], labels, d["path"], d["header_hash"], documents["architecture"],
               documents["fingerprint"], d["features"], None,
               lists.get(tokens) if type(tokens) is int else None, d["retrieval"], d["added_at"],
               size if type(size) is int else None), ""
