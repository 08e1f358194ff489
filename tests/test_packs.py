"""Signature packs: export / import / ``scan --db PACK`` give the same answers; hostile packs are
refused with one line and change nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from lineage_models import base_weights, rename, save
from tensorguard.catalogue import Catalogue, Store, is_pack, read_pack, scan
from tensorguard.catalogue.packs import PACK_VERSION, rows_digest
from tensorguard.errors import TensorguardError
from tensorguard.synthetic import finetune

VOCAB = [f"tok{i}" for i in range(256)]
FAST = {"samples": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A catalogue of alpha and beta (labelled), a pack of it, and a disguised fine-tune of alpha."""
    root = tmp_path_factory.mktemp("packs")
    alpha = base_weights(0)
    paths = {"alpha": save(root / "alpha", alpha, VOCAB), "beta": save(root / "beta", base_weights(1), VOCAB),
             "suspect": save(root / "suspect", rename(finetune(alpha, 0.3, seed=5), 7), VOCAB)}
    cat = Catalogue(root / "team.sqlite", builtin=False)
    rows = [cat.measure(paths[n], **FAST) for n in ("alpha", "beta")]
    cat.insert([dataclasses.replace(rows[0], labels={"base": "alpha", "licence": "restricted"}), rows[1]])
    pack = root / "team.tgpack"
    info = cat.export_pack(pack)
    assert info.rows == 2 and info.version == PACK_VERSION and info.size == pack.stat().st_size
    return paths, cat, pack


def _rows(db: Path) -> list:
    with Store.open(db) as store:
        return [dataclasses.replace(r, signature=store.signature(r.name), signature_size=None)
                for r in store.all()]


def _answer(result) -> tuple:
    return (result.answer, result.base, result.base_labels,
            [(c.name, c.score, c.retrieval, c.match, c.confirmation) for c in result.candidates])


def test_export_import_and_scan_on_the_pack_give_the_same_answers(world, tmp_path):
    paths, cat, pack = world
    assert is_pack(pack) and not is_pack(cat.path)
    info, rows = read_pack(pack)
    assert [r.name for r in rows] == ["alpha", "beta"] and all(r.signature for r in rows)
    assert rows_digest(rows) == rows_digest(_rows(cat.path)) == info.sha256  # entry for entry
    mine = Catalogue(tmp_path / "mine.sqlite", builtin=False)
    result = mine.import_pack(pack)
    assert [e.name for e in result.added] == ["alpha", "beta"] and result.unchanged == ()
    assert rows_digest(_rows(mine.path)) == info.sha256
    assert mine.entry("alpha").labels == {"base": "alpha", "licence": "restricted"}
    answers = [_answer(scan(paths["suspect"], catalogue=c, **FAST))
               for c in (cat, Catalogue(pack, builtin=False), mine)]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0].value == "derived" and answers[0][1] == "alpha"


def test_import_reports_conflicts_and_changes_nothing_without_replace(world, tmp_path):
    _, cat, pack = world
    mine = Catalogue(tmp_path / "mine.sqlite", builtin=False)
    mine.import_pack(pack)
    again = mine.import_pack(pack)  # equal entries are left as they are
    assert again.added == () and again.unchanged == ("alpha", "beta")
    alpha = _rows(cat.path)[0]
    mine.insert([dataclasses.replace(alpha, labels={"licence": "open"})], replace=True)
    before = _rows(mine.path)
    with pytest.raises(TensorguardError, match=r"1 entries .* alpha; nothing was imported"):
        mine.import_pack(pack)
    assert _rows(mine.path) == before
    replaced = mine.import_pack(pack, replace=True)
    assert replaced.replaced == ("alpha",) and mine.entry("alpha").labels["licence"] == "restricted"


def test_a_pack_is_read_only(world):
    _, _, pack = world
    with pytest.raises(TensorguardError, match="signature pack"):
        Catalogue(pack).remove("alpha")


def _edit(pack: Path, target: Path, *statements: str) -> Path:
    shutil.copy(pack, target)
    with closing(sqlite3.connect(target, isolation_level=None)) as db:
        for statement in statements:
            db.execute(statement)
    return target


def _hostile(pack: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    data = pack.read_bytes()
    truncated = tmp / "truncated.tgpack"
    truncated.write_bytes(data[: len(data) - 1000])
    flipped = bytearray(data)
    with closing(sqlite3.connect(pack)) as db:
        sig = db.execute("SELECT signature FROM signatures WHERE name = 'beta'").fetchone()[0]
    at = bytes(flipped).index(sig[200:264]) + 10  # a byte inside beta's signature
    flipped[at] ^= 0x40
    (tmp / "flipped.tgpack").write_bytes(bytes(flipped))
    deep = json.dumps({"base": "x"}).replace('"x"', "[" * 40 + "]" * 40)
    return {
        "truncated": (truncated, "truncated"),
        "flipped": (tmp / "flipped.tgpack", "checksum mismatch"),
        "absurd": (_edit(pack, tmp / "absurd.tgpack",
                         f"UPDATE models SET labels = '{json.dumps({'x': 'y' * 100_000})}'"), "labels of"),
        "deep": (_edit(pack, tmp / "deep.tgpack", f"UPDATE models SET labels = '{deep}'"), "nested"),
        "version": (_edit(pack, tmp / "version.tgpack", "UPDATE pack SET value = '99' WHERE key = 'version'"),
                    "pack version 99 is newer"),
        "rows": (_edit(pack, tmp / "rows.tgpack", "UPDATE pack SET value = '3' WHERE key = 'rows'"),
                 "2 rows where the pack declares 3"),
        "view": (_edit(pack, tmp / "view.tgpack", "CREATE VIEW v AS SELECT 1"), "unexpected tables"),
        "trigger": (_edit(pack, tmp / "trigger.tgpack", "CREATE TRIGGER t AFTER INSERT ON pack BEGIN "
                          "DELETE FROM models; END"), "unexpected tables"),
        "altered": (_edit(pack, tmp / "altered.tgpack", "UPDATE models SET path = '/elsewhere'"),
                    "checksum mismatch"),
        "garbage": (tmp / "garbage.tgpack", "not an SQLite file"),
    }


def test_hostile_packs_are_refused_with_one_line_and_change_nothing(world, tmp_path, run_cli):
    _, cat, pack = world
    cases = _hostile(pack, tmp_path)
    (tmp_path / "garbage.tgpack").write_bytes(b"TGPACK" + bytes(200))
    mine = Catalogue(tmp_path / "mine.sqlite", builtin=False)
    mine.insert(_rows(cat.path)[1:])
    before = _rows(mine.path)
    for case, (path, message) in cases.items():
        with pytest.raises(TensorguardError, match=message):
            read_pack(path)
        result = run_cli("index", "import", path, "--db", mine.path)
        assert result.code == 2, case
        if case != "garbage":  # not a pack by its first bytes: read as a fingerprint file
            assert "not a usable signature pack" in result.err, case
        assert result.err.count("\n") == 1 and "Traceback" not in result.err, case
        assert _rows(mine.path) == before, case
    with pytest.raises(TensorguardError, match="without the pack mark"):
        read_pack(cat.path)


def test_cli_export_import_and_scan_with_the_pack(world, tmp_path, run_cli):
    paths, cat, _ = world
    pack = tmp_path / "team.tgpack"
    out = run_cli("index", "export", pack, "--db", cat.path)
    assert out.code == 0 and out.out.startswith(f"{pack}: 2 entries") and is_pack(pack)
    again = run_cli("index", "export", pack, "--db", cat.path)
    assert again.code == 2 and "already exists; pass --force" in again.err
    assert run_cli("index", "export", pack, "--db", cat.path, "--force").code == 0
    imported = run_cli("index", "import", pack, "--db", tmp_path / "mine.sqlite", "--json")
    assert imported.code == 0 and [e["name"] for e in json.loads(imported.out)["added"]] == ["alpha", "beta"]
    twice = run_cli("index", "import", pack, pack, "--db", tmp_path / "mine.sqlite")
    assert twice.code == 2 and "imported alone" in twice.err
    scanned = run_cli("scan", paths["suspect"], "--db", pack, "--no-builtin", "--samples", "2",
                      "--device", "cpu", "--json")
    assert scanned.code == 0 and json.loads(scanned.out)["base"] == "alpha"
    refused = run_cli("index", "remove", "alpha", "--db", pack)
    assert refused.code == 2 and "signature pack (read-only)" in refused.err
