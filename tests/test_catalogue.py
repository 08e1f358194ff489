"""The SQLite catalogue: round trip, labels, built-in entries, schema checks, interrupt safety."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lineage_models import base_weights, save
from tensorguard.catalogue import (
    Origin,
    Store,
    add_models,
    builtin_entries,
    header_hash,
    import_fingerprints,
    list_entries,
    parse_labels,
    remove_entry,
    show_entry,
)
from tensorguard.errors import TensorguardError
from tensorguard.loading import open_model
from tensorguard.reference import bundled_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: save(root / name, base_weights(seed)) for name, seed in (("alpha", 0), ("beta", 1))}


def _dump(db: Path) -> list[list[tuple]]:
    with sqlite3.connect(db) as con:
        return [con.execute(f"SELECT * FROM {t} ORDER BY name").fetchall() for t in ("models", "signatures")]


def test_add_list_show_remove_round_trip(tmp_path, models):
    db = tmp_path / "cat.sqlite"
    added = add_models([models["alpha"]], db=db, labels=parse_labels("base=alpha,licence=restricted"),
                       device="cpu")
    assert [e.name for e in added] == ["alpha"]
    entry = show_entry("alpha", db=db)
    assert entry.origin == Origin.MODEL and entry.labels == {"base": "alpha", "licence": "restricted"}
    assert entry.path == str(models["alpha"].resolve()) and entry.signature_bytes
    assert entry.architecture["num_blocks"] == 6 and entry.fingerprint is not None
    names = [e.name for e in list_entries(db=db)]
    assert "alpha" in names and len(names) == 1 + len(builtin_entries())
    assert [e.name for e in list_entries(db=db, builtin=False)] == ["alpha"]
    with pytest.raises(TensorguardError, match="already in the catalogue"):
        add_models([models["alpha"]], db=db, device="cpu")
    add_models([models["alpha"]], db=db, device="cpu", replace=True, labels={"family": "greek"})
    assert show_entry("alpha", db=db).labels == {"family": "greek"}
    assert remove_entry("alpha", db=db).name == "alpha"
    assert list_entries(db=db, builtin=False) == []
    with pytest.raises(TensorguardError, match="not in the catalogue"):
        remove_entry("alpha", db=db)


def test_builtin_entries_are_read_only_and_labelled(tmp_path):
    builtin = builtin_entries()
    assert len(builtin) == 43 and all(e.origin == Origin.BUILTIN for e in builtin)
    phi = next(e for e in builtin if e.name == "unsloth-phi-4")
    assert phi.labels["base"] == "phi-4" and phi.fingerprint is not None
    with pytest.raises(TensorguardError, match="built-in"):
        remove_entry("phi-4", db=tmp_path / "cat.sqlite")
    assert show_entry("phi-4", db=tmp_path / "missing.sqlite").origin == Origin.BUILTIN


def test_import_fingerprints_reads_labels_of_the_folder(tmp_path):
    db = tmp_path / "cat.sqlite"
    entries = import_fingerprints([bundled_dir()], db=db, labels={"licence": "open"})
    assert len(entries) == 43
    mars = show_entry("MARS-v0.2", db=db)
    assert mars.origin == Origin.FINGERPRINT and mars.labels["base"] == "Llama-3.1-8B"
    assert mars.labels["licence"] == "open" and mars.path is None
    assert len(list_entries(db=db)) == 43  # the file's rows shadow the built-in ones of the same name


def test_labels_are_parsed_strictly():
    assert parse_labels("base=a, license=restricted ,team=x") == {"base": "a", "licence": "restricted",
                                                                   "team": "x"}
    for bad in ("base", "base=", "=x", "base=a,base=b"):
        with pytest.raises(TensorguardError):
            parse_labels(bad)


def test_header_hash_notices_a_changed_file(tmp_path, models):
    with open_model(models["alpha"]) as source:
        before = header_hash(source)
    copy = save(tmp_path / "copy", base_weights(0))
    with open_model(copy) as source:
        assert header_hash(source) == before  # a moved copy is the same content
    save(tmp_path / "copy", base_weights(2))
    with open_model(copy) as source:
        assert header_hash(source) != before


def test_schema_is_checked(tmp_path):
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as con:
        con.execute("PRAGMA user_version = 99")
    with pytest.raises(TensorguardError, match="newer than"):
        list_entries(db=newer)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(TensorguardError, match="not a tensorguard catalogue"):
        list_entries(db=foreign)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(TensorguardError, match="not a tensorguard catalogue"):
        list_entries(db=junk)


def test_readers_do_not_wait_for_an_open_write(tmp_path, models):
    db = tmp_path / "cat.sqlite"
    add_models([models["alpha"]], db=db, device="cpu")
    with Store.open(db, writable=True) as writer, writer.transaction() as con:
        con.execute("DELETE FROM models")
        # a concurrent reader still sees the committed state, without blocking
        assert [e.name for e in list_entries(db=db, builtin=False)] == ["alpha"]
    assert list_entries(db=db, builtin=False) == []


_CHILD = textwrap.dedent("""
    import sys, time
    import tensorguard.catalogue.index as index
    import tensorguard.catalogue.store as store
    from tensorguard.catalogue import add_models

    db, stage, models = sys.argv[1], sys.argv[2], sys.argv[3:]
    if stage == "measure":  # stall while reading the second model
        measure = index.measure_model
        def slow(model, **kw):
            if model == models[1]:
                print("ready", flush=True)
                time.sleep(60)
            return measure(model, **kw)
        index.measure_model = slow
    else:  # stall inside the transaction, after the first row was written
        encode = store._encode
        def slow(row):
            if row.name == "beta":
                print("ready", flush=True)
                time.sleep(60)
            return encode(row)
        store._encode = slow
    add_models(models, db=db, device="cpu")
""")


@pytest.mark.parametrize("stage", ["measure", "transaction"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_add_leaves_the_catalogue_unchanged(tmp_path, models, stage, sig):
    db = tmp_path / "cat.sqlite"
    add_models([models["beta"]], db=db, device="cpu", labels={"licence": "open"})
    remove_entry("beta", db=db)
    import_fingerprints([bundled_dir() / "phi-4_features.json"], db=db)
    before = _dump(db)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(db), stage, str(models["alpha"]),
                              str(models["beta"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert _dump(db) == before  # readable, and nothing of the interrupted add is there
    assert [e.name for e in list_entries(db=db, builtin=False)] == ["phi-4"]
