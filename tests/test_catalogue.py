"""The SQLite catalogue: round trip, labels, built-in entries, schema checks, interrupt safety."""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lineage_models import base_weights, save
from tensorguard.catalogue import Catalogue, Origin, Store, builtin_entries, header_hash, parse_labels
from tensorguard.errors import OptionError, TensorguardError
from tensorguard.loading import open_model
from tensorguard.reference import bundled_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: save(root / name, base_weights(seed)) for name, seed in (("alpha", 0), ("beta", 1))}


def _dump(db: Path) -> list[list[tuple]]:
    with sqlite3.connect(db) as con:
        return [con.execute(f"SELECT * FROM {t} ORDER BY {key}").fetchall()
                for t, key in (("models", "name"), ("signatures", "name"), ("token_lists", "id"))]


@pytest.fixture(scope="module")
def alpha_row(models):
    """alpha measured once (the slow part), inserted into each test's own catalogue."""
    return Catalogue(builtin=False).measure(models["alpha"], device="cpu", samples=2)


def test_add_list_show_remove_round_trip(tmp_path, models, alpha_row):
    cat = Catalogue(tmp_path / "cat.sqlite")
    labelled = dataclasses.replace(alpha_row, labels=parse_labels("base=alpha,licence=restricted"))
    added = cat.insert([labelled])
    assert [e.name for e in added] == ["alpha"]
    entry = cat.entry("alpha")
    assert entry.origin == Origin.MODEL and entry.labels == {"base": "alpha", "licence": "restricted"}
    assert entry.path == str(models["alpha"].resolve()) and entry.signature_bytes
    assert entry.architecture["num_blocks"] == 6 and entry.fingerprint is not None
    names = [e.name for e in cat.entries()]
    assert "alpha" in names and len(names) == 1 + len(builtin_entries())
    assert [e.name for e in Catalogue(cat.path, builtin=False).entries()] == ["alpha"]
    with pytest.raises(TensorguardError, match="already in the catalogue"):
        cat.insert([alpha_row])
    cat.insert([dataclasses.replace(alpha_row, labels={"family": "greek"})], replace=True)
    assert cat.entry("alpha").labels == {"family": "greek"}
    assert cat.remove("alpha").name == "alpha"
    assert Catalogue(cat.path, builtin=False).entries() == []
    with pytest.raises(TensorguardError, match="not in the catalogue"):
        cat.remove("alpha")


def test_add_measures_then_writes(tmp_path, models):
    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    added = cat.add([models["beta"]], labels={"License": "open"}, samples=2, device="cpu")
    assert [(e.name, e.labels) for e in added] == [("beta", {"licence": "open"})]
    assert [e.name for e in cat.entries()] == ["beta"]
    with pytest.raises(TensorguardError, match="single model"):
        cat.add([models["alpha"], models["beta"]], name="x")


def test_builtin_entries_are_read_only_and_labelled(tmp_path):
    builtin = builtin_entries()
    assert len(builtin) == 43 and all(e.origin == Origin.BUILTIN for e in builtin)
    phi = next(e for e in builtin if e.name == "unsloth-phi-4")
    assert phi.labels["base"] == "phi-4" and phi.fingerprint is not None
    with pytest.raises(TensorguardError, match="built-in"):
        Catalogue(tmp_path / "cat.sqlite").remove("phi-4")
    assert Catalogue(tmp_path / "missing.sqlite").entry("phi-4").origin == Origin.BUILTIN
    assert not (tmp_path / "missing.sqlite").exists()  # reading never creates the file


def test_import_fingerprints_reads_labels_of_the_folder(tmp_path):
    cat = Catalogue(tmp_path / "cat.sqlite")
    entries = cat.import_fingerprints([bundled_dir()], labels={"licence": "open"})
    assert len(entries) == 43
    mars = cat.entry("MARS-v0.2")
    assert mars.origin == Origin.FINGERPRINT and mars.labels["base"] == "Llama-3.1-8B"
    assert mars.labels["licence"] == "open" and mars.path is None
    assert len(cat.entries()) == 43  # the file's rows shadow the built-in ones of the same name


def test_labels_are_parsed_strictly():
    assert parse_labels("base=a, license=restricted ,team=x") == {"base": "a", "licence": "restricted",
                                                                   "team": "x"}
    for bad in ("base", "base=", "=x", "base=a,base=b", "base=a,BASE=b"):
        with pytest.raises(OptionError):
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
        Catalogue(newer).entries()
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(TensorguardError, match="not a tensorguard catalogue"):
        Catalogue(foreign).entries()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(TensorguardError, match="not a tensorguard catalogue"):
        Catalogue(junk).entries()
    with pytest.raises(TensorguardError, match="is a directory"):
        Catalogue(tmp_path).entries()


def test_readers_do_not_wait_for_an_open_write(tmp_path, alpha_row):
    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    cat.insert([alpha_row])
    with Store.open(cat.path, writable=True) as writer, writer.transaction() as con:
        con.execute("DELETE FROM models")
        # a concurrent reader still sees the committed state, without blocking
        assert [e.name for e in cat.entries()] == ["alpha"]
    assert cat.entries() == []


_CHILD = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # not the launcher's (nohup ignores it)
    import tensorguard.catalogue.catalogue as catalogue
    import tensorguard.catalogue.store as store
    from tensorguard.catalogue import Catalogue

    db, stage, models = sys.argv[1], sys.argv[2], sys.argv[3:]
    if stage == "measure":  # stall while reading the second model
        measure = catalogue.measure_model
        def slow(model, **kw):
            if model == models[1]:
                print("ready", flush=True)
                time.sleep(60)
            return measure(model, **kw)
        catalogue.measure_model = slow
    else:  # stall inside the transaction, after the first row was written
        labels, seen = store._json, []
        def slow(value):
            if value == {"licence": "late"}:
                seen.append(value)
                if len(seen) == 2:  # the second row's labels: the first row is written
                    print("ready", flush=True)
                    time.sleep(60)
            return labels(value)
        store._json = slow
    Catalogue(db).add(models, device="cpu", samples=2,
                      labels={"licence": "late"} if stage == "transaction" else None)
""")


@pytest.mark.parametrize(("stage", "sig"), [("measure", signal.SIGINT), ("transaction", signal.SIGINT),
                                            ("transaction", signal.SIGKILL)],
                         ids=["SIGINT-measure", "SIGINT-transaction", "SIGKILL-transaction"])
def test_interrupted_add_leaves_the_catalogue_unchanged(tmp_path, models, alpha_row, stage, sig):
    db = tmp_path / "cat.sqlite"
    cat = Catalogue(db, builtin=False)
    cat.insert([alpha_row])
    cat.remove("alpha")
    cat.import_fingerprints([bundled_dir() / "phi-4_features.json"])
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
    assert [e.name for e in cat.entries()] == ["phi-4"]
