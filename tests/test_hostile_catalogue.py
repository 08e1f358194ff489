"""Hostile catalogues: files that are not what they claim, read-only files and folders, a file held
by another writer, damaged rows, and seeded byte flips and truncations of a real catalogue. Every
case answers with one line and exit 2 (never 70, never a hang), readers keep working, and a failed
write leaves the catalogue's rows as they were (each test compares before and after).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lineage_models import base_weights, save
from tensorguard.catalogue import Catalogue, CatalogueBusyError, Store
from tensorguard.errors import TensorguardError
from tensorguard.reference import bundled_dir
from test_hostile import FUZZ, clean_failure, deadline

FAST = ("--samples", "2", "--device", "cpu")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
not_root = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                              reason="root writes read-only files")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save(tmp_path_factory.mktemp("hostile-cat") / "alpha", base_weights(0))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, model) -> Path:
    """A real catalogue: one model with its signature and token list, and 43 fingerprint rows."""
    db = tmp_path_factory.mktemp("pristine") / "cat.sqlite"
    cat = Catalogue(db, builtin=False)
    cat.add([model], samples=2, device="cpu", labels={"licence": "open"})
    cat.import_fingerprints([bundled_dir()])
    return db


@pytest.fixture
def db(tmp_path, pristine) -> Path:
    copy = tmp_path / "cat.sqlite"
    shutil.copyfile(pristine, copy)
    return copy


def dump(path: Path) -> list[list[tuple]]:
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as con:
        con.text_factory = bytes
        return [con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()
                for t in ("models", "signatures", "token_lists")]


def write_commands(path: Path, model: Path) -> list[tuple[object, ...]]:
    return [("index", "add", model, "--db", path, "--replace", *FAST),
            ("index", "remove", "phi-4", "--db", path),
            ("index", "import", bundled_dir() / "phi-4_features.json", "--db", path, "--replace"),
            ("index", "repair", "--remove", "--db", path)]


def read_commands(path: Path) -> list[tuple[object, ...]]:
    return [("index", "list", "--db", path), ("index", "show", "phi-4", "--db", path),
            ("index", "repair", "--db", path)]


# --- files that are not what they claim ------------------------------------------------------------

def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE notes (body TEXT)")
        con.execute("PRAGMA user_version = 1")


def _other_program(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE accounts (id INTEGER)")


def _newer(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA user_version = 99")


def _wrong_columns(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.executescript("CREATE TABLE token_lists (id INTEGER PRIMARY KEY, tokens TEXT);"
                          "CREATE TABLE models (name TEXT PRIMARY KEY, labels TEXT);"
                          "CREATE TABLE signatures (name TEXT, signature BLOB); PRAGMA user_version = 1;")


NOT_CATALOGUES = [  # (id, make the file, what the message says)
    pytest.param(_fifo, "FIFO", id="fifo", marks=needs_fifo),
    pytest.param(lambda p: p.mkdir(), "is a directory", id="directory"),
    pytest.param(lambda p: p.touch(), "empty file (0 bytes)", id="empty"),
    pytest.param(lambda p: p.write_bytes(b"not sqlite at all\n" * 50), "not an SQLite file", id="text"),
    pytest.param(_other_program, "another program (tables accounts)", id="other program"),
    pytest.param(_foreign, "another program (tables notes)", id="user_version 1"),
    pytest.param(_wrong_columns, "lacks column(s) path, header_hash", id="wrong columns"),
    pytest.param(_newer, "newer than this tensorguard", id="newer"),
]


def _snapshot(path: Path) -> object:
    return path.read_bytes() if path.is_file() else (path.is_dir(), path.exists())


@pytest.mark.parametrize(("make", "message"), NOT_CATALOGUES)
def test_files_that_are_not_catalogues(tmp_path, run_cli, model, make, message):
    path = tmp_path / "cat.sqlite"
    make(path)
    before = _snapshot(path)
    for command in [*read_commands(path), *write_commands(path, model), ("scan", model, "--db", path, *FAST)]:
        err = clean_failure(run_cli, *command)
        assert message in err and str(path) in err, (command, err)
    assert _snapshot(path) == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.sqlite"]  # no journal left beside it


@needs_fifo
def test_symlink_to_a_fifo(tmp_path, run_cli):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "cat.sqlite").symlink_to(tmp_path / "pipe")
    assert "FIFO" in clean_failure(run_cli, "index", "list", "--db", tmp_path / "cat.sqlite")


def test_a_missing_file_reads_as_empty_and_reading_writes_nothing(tmp_path, db, run_cli):
    listed = run_cli("index", "list", "--no-builtin", "--db", tmp_path / "none.sqlite")
    assert listed.code == 0 and "0 entries" in listed.out
    assert not (tmp_path / "none.sqlite").exists()
    data = db.read_bytes()
    assert run_cli("index", "list", "--db", db).code == 0
    assert db.read_bytes() == data


# --- read-only files and folders -------------------------------------------------------------------

def test_a_catalogue_that_cannot_be_written_says_so(db, run_cli, model, monkeypatch):
    """``os.access`` answers as for a read-only file (the check root would pass too)."""
    before = dump(db)
    real = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, mode: False if Path(p) == db and mode & os.W_OK else real(p, mode))
    for command in write_commands(db, model)[:3]:
        err = clean_failure(run_cli, *command)
        assert f"{db}: the catalogue file is read-only" in err, err
    assert run_cli("index", "list", "--db", db).code == 0
    assert dump(db) == before


def test_a_read_only_folder_says_so(db, run_cli, model, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, mode: False if Path(p) == db.parent and mode & os.W_OK else real(p, mode))
    err = clean_failure(run_cli, "index", "remove", "phi-4", "--db", db)
    assert f"its folder {db.parent} is read-only" in err


@not_root
@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_for_real(db, run_cli, model, what):
    before = dump(db)
    target = db if what == "file" else db.parent
    mode = target.stat().st_mode
    target.chmod(0o444 if what == "file" else 0o555)
    try:
        assert "read-only" in clean_failure(run_cli, "index", "remove", "phi-4", "--db", db)
        assert run_cli("index", "list", "--db", db).code == 0
        assert run_cli("index", "show", "phi-4", "--db", db).code == 0
        assert run_cli("scan", model, "--db", db, *FAST).code == 0
    finally:
        target.chmod(mode)
    assert dump(db) == before


# --- a catalogue held by another writer --------------------------------------------------------------

_HOLD = textwrap.dedent("""
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    con.execute("DELETE FROM models")  # uncommitted: readers must still see every row
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    con.execute("ROLLBACK")
""")


def test_a_writer_waits_a_bounded_time_and_readers_never_wait(db, run_cli, model):
    before = dump(db)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(db), "60"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for command in write_commands(db, model)[:3]:  # (repair --remove has nothing to write)
            start = time.monotonic()
            with deadline(30):
                result = run_cli(*command, "--timeout", "0.5")
            assert result.code == 2 and time.monotonic() - start < 30
            notice, error = result.err.splitlines()  # a notice while waiting, then one line
            assert notice.endswith(f"{db}: another process is writing the catalogue; waiting up to 0.5 s")
            assert f"{db}: the catalogue is busy" in error and "--timeout SECONDS" in error, error
        listed = run_cli("index", "list", "--db", db, "--no-builtin", "--json")
        assert listed.code == 0 and len(json.loads(listed.out)) == 44
        assert run_cli("scan", model, "--db", db, *FAST, "--json").code == 0
        with pytest.raises(CatalogueBusyError):
            Catalogue(db, timeout=0.2).remove("phi-4")
    finally:
        holder.kill()
        holder.wait()
    assert dump(db) == before


def test_a_writer_goes_on_once_the_other_has_finished(db):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(db), "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert Catalogue(db, timeout=30).remove("phi-4").name == "phi-4"
    finally:
        holder.wait()


def test_timeout_is_checked(db, run_cli):
    assert "--timeout" in clean_failure(run_cli, "index", "list", "--db", db, "--timeout", "-1")
    with pytest.raises(TensorguardError, match="timeout=nan"):
        Store.open(db, timeout=float("nan"))


# --- damaged rows ------------------------------------------------------------------------------------

DAMAGE = [  # (entry, SQL making it damaged, what the warning says)
    ("phi-4", "UPDATE models SET labels = 'not json' WHERE name = 'phi-4'", "labels are not a JSON object"),
    ("MARS-v0.2", "UPDATE models SET labels = '[1, 2]' WHERE name = 'MARS-v0.2'", "labels are not"),
    ("Qwen2.5-3B", "UPDATE models SET labels = '{\"base\": 3}' WHERE name = 'Qwen2.5-3B'", "labels are not"),
    ("llama-3.2-1b", "UPDATE models SET features = x'0001' WHERE name = 'llama-3.2-1b'",
     "features are 2 bytes, not 112 bytes"),
    ("Qwen2.5-7B-Instruct", "UPDATE models SET features = (SELECT features FROM models WHERE name = 'alpha') "
     "|| x'00' WHERE name = 'Qwen2.5-7B-Instruct'", "features are text"),  # bad UTF-8 text
    ("Mistral-7B-v0.1", "UPDATE models SET features = x'{}' WHERE name = 'Mistral-7B-v0.1'".format(
        "000000000000f07f" * 14), "not finite numbers"),
    ("gemma-3-4b-it", "UPDATE models SET fingerprint = '{\"model_name\": 1}' WHERE name = 'gemma-3-4b-it'",
     "fingerprint is unreadable"),
    ("Mistral-7B-v0.3", "UPDATE models SET architecture = '\"text\"' WHERE name = 'Mistral-7B-v0.3'",
     "architecture is not"),
    ("Llama-3.2-3B", "UPDATE models SET tokens = 999 WHERE name = 'Llama-3.2-3B'",
     "token list 999 does not exist"),
    (None, "INSERT INTO models (name, labels, added_at) VALUES (NULL, '{}', 'now')", "no name"),
]


def damage(db: Path, *, signature: bool = True, token_list: bool = False) -> None:
    with sqlite3.connect(db) as con:
        for _, sql, _ in DAMAGE:
            con.execute(sql)
        if signature:
            con.execute("UPDATE signatures SET signature = x'00112233' WHERE name = 'alpha'")
        if token_list:
            con.execute("UPDATE token_lists SET tokens = '[1, 2, 3]'")


def test_damaged_rows_are_named_and_skipped(db, run_cli, model):
    damage(db)
    listed = run_cli("index", "list", "--db", db, "--no-builtin", "--json")
    assert listed.code == 0, listed.err
    names = {e["name"] for e in json.loads(listed.out)}
    for name, _, problem in DAMAGE:
        assert name not in names
        assert problem in listed.err and (name is None or repr(name) in listed.err), (name, listed.err)
    assert "alpha" in names and len(names) == 44 - len(DAMAGE) + 1  # the rest is all there
    assert "index repair" in listed.err and "Traceback" not in listed.err
    shown = clean_failure(run_cli, "index", "show", "phi-4", "--db", db, "--no-builtin")
    assert "'phi-4'" in shown and "labels are not a JSON object" in shown
    assert run_cli("index", "show", "Llama-3.1-8B", "--db", db, "--no-builtin").code == 0
    scanned = run_cli("scan", model, "--db", db, *FAST, "--json", "--no-builtin")
    assert scanned.code == 0, scanned.err
    assert "'alpha'" in scanned.err and "corrupt signature" in scanned.err  # its signature, named
    assert json.loads(scanned.out)["rows"] == 45 - 5  # less the rows whose ranked columns are damaged


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_non_finite_retrieval_vectors_and_signatures(db, run_cli, model):
    nan = b"\x00\x7e"  # float16 NaN
    with sqlite3.connect(db) as con:
        (vector,) = con.execute("SELECT retrieval FROM models WHERE name = 'alpha'").fetchone()
        con.execute("UPDATE models SET retrieval = ? WHERE name = 'alpha'", (vector[:-2] + nan,))
    scanned = run_cli("scan", model, "--db", db, *FAST, "--no-builtin")
    assert scanned.code == 0 and "'alpha'" in scanned.err and "not finite" in scanned.err, scanned.err
    with sqlite3.connect(db) as con:
        (blob,) = con.execute("SELECT signature FROM signatures").fetchone()
        con.execute("UPDATE signatures SET signature = ?", (blob[:-2] + nan,))
    found = run_cli("index", "repair", "--db", db)
    assert found.code == 0 and "'alpha'" in found.out and "not finite" in found.out, found.out


def test_a_damaged_token_list_damages_its_rows(db, run_cli, model):
    with sqlite3.connect(db) as con:
        con.execute("UPDATE token_lists SET tokens = '\"abc\"'")
    listed = run_cli("index", "list", "--db", db, "--no-builtin")
    assert listed.code == 0 and "'alpha'" in listed.err and "token list" in listed.err
    assert run_cli("scan", model, "--db", db, *FAST).code == 0


def test_repair_lists_then_removes_exactly_the_damaged_rows(db, run_cli):
    damage(db)
    healthy = [r for r in dump(db)[0] if r[0] in {b"Llama-3.1-8B", b"Qwen2.5-3B-Instruct"}]
    listed = run_cli("index", "repair", "--db", db, "--json")
    assert listed.code == 0
    found = json.loads(listed.out)
    assert {d["name"] for d in found} == {n for n, _, _ in DAMAGE} | {"alpha"}
    assert len(dump(db)[0]) == 45  # listing changes nothing
    removed = run_cli("index", "repair", "--remove", "--db", db)
    assert removed.code == 0 and f"{len(found)} damaged entries removed" in removed.out
    after = run_cli("index", "list", "--db", db, "--no-builtin", "--json")
    assert after.code == 0 and after.err == ""
    assert len(json.loads(after.out)) == 45 - len(found)
    assert [r for r in dump(db)[0] if r[0] in {b"Llama-3.1-8B", b"Qwen2.5-3B-Instruct"}] == healthy
    assert dump(db)[1] == [] and dump(db)[2] == []  # alpha's signature and token list went with it
    assert "no damaged entries" in run_cli("index", "repair", "--db", db).out


def test_a_damaged_row_can_be_removed_by_name(db, run_cli):
    damage(db, signature=False)
    assert run_cli("index", "remove", "phi-4", "--db", db).code == 0
    assert Catalogue(db).check() and "phi-4" not in {d.name for d in Catalogue(db).check()}


def test_library_check_returns_typed_damage(db):
    damage(db)
    found = Catalogue(db, builtin=False).check()
    nameless = [d for d in found if d.name is None]
    assert len(nameless) == 1 and "no name" in str(nameless[0]) and nameless[0].rowid > 0


# --- truncations and byte flips of a real catalogue -----------------------------------------------------

def test_truncated_catalogue(db, run_cli, model):
    data = db.read_bytes()
    for size in (100, 1000, 4096, len(data) // 2, len(data) - 1000):
        db.write_bytes(data[:size])
        for command in read_commands(db):
            clean_failure(run_cli, *command, codes=(0, 2))
        clean_failure(run_cli, "scan", model, "--db", db, *FAST, codes=(0, 2))


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a numpy warning would be exit 70
def test_fuzzed_catalogue(db, run_cli, model):
    """Seeded byte flips (header and pages) and truncations: every command answers 0 or 2 (scan on
    every tenth case: it measures the model each time)."""
    data = db.read_bytes()
    rng = random.Random(FUZZ.seed(23))
    for i in range(FUZZ.cases(60)):
        buf = bytearray(data)
        if i % 3 == 2:
            buf = buf[:rng.randrange(0, len(buf))]
        else:
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(0, 100) if i % 3 == 0 else rng.randrange(0, len(buf))
                buf[at] ^= 1 << rng.randrange(8)
        db.write_bytes(bytes(buf))
        scan = [("scan", model, "--db", db, *FAST)] if i % 10 == 0 else []
        for command in (*read_commands(db), ("index", "remove", "phi-4", "--db", db), *scan):
            try:
                clean_failure(run_cli, *command, codes=(0, 2))
            except AssertionError as exc:
                raise AssertionError(f"case {i}: {exc}") from None
