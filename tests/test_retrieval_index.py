"""The retrieval index: the indexed retrieve step ranks exactly the rows, with exactly the scores,
of the exhaustive search, on many seeded catalogues (near-ties, duplicates, other token lists,
negative scores, no relatives), and every write keeps the index in step with the rows."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from lineage_models import base_weights, save
from tensorguard.catalogue import SHORTLIST, Catalogue, Row, Store, read_pack
from tensorguard.catalogue.retrieval import indexed_scores, load_known, retrieval_scores, vector_groups
from tensorguard.catalogue.sketches import BLOCK_ROWS
from tensorguard.catalogue.store import drop_index
from tensorguard.signatures import compute_signature, retrieval_vector
from tensorguard.synthetic import finetune

VOCAB = [f"tok{i}" for i in range(256)]
ROWS = 1200
#: Scores this close are ties: float32 products over different numbers of rows round differently
#: (the exhaustive search's own chunks disagree this much).
TIE = 1e-6
KINDS = ("planted", "near-ties", "duplicates", "foreign", "negative", "unrelated")


@pytest.fixture(scope="module")
def query(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    return compute_signature(save(root / "query", finetune(base_weights(0), 0.2, seed=1), VOCAB))


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float32) - v.mean()
    return v / np.linalg.norm(v)


def _rows(sig, seed: int, kind: str, rows: int = ROWS, prefix: str = "row") -> list[Row]:
    """``rows`` rows around the query's retrieval vector, shaped by ``kind``."""
    rng = np.random.default_rng(seed)
    tokens, vector = retrieval_vector(sig)
    q = vector.astype(np.float32)
    lists = [tokens, tuple(f"x{t}" if i % 5 == 0 else t for i, t in enumerate(tokens)),
             tuple(reversed(tokens)), tuple(f"y{t}" if i % 9 else t for i, t in enumerate(tokens))]
    near = _unit(q + rng.normal(size=q.size).astype(np.float32) * rng.uniform(0.01, 0.02))
    middle = _unit(q + rng.normal(size=q.size).astype(np.float32) * 0.015)  # score about 0.83
    out = []
    for i in range(rows):
        noise = rng.normal(size=q.size).astype(np.float32)
        row_tokens = lists[i % 3] if kind != "foreign" else lists[1 + i % 2]
        if kind == "planted":
            v = q + noise * (rng.uniform(0.005, 0.02) if i % 11 == 0 else 1.0)
        elif kind == "near-ties":  # many rows a hair apart across the shortlist's boundary
            v = middle + noise * (2e-5 if i % 20 == 0 else 1.0)
            row_tokens = tokens if i % 20 == 0 else row_tokens
        elif kind == "duplicates":  # exact ties: equal vectors
            v = near if i % 30 == 0 else q + noise
            row_tokens = tokens if i % 30 == 0 else row_tokens
        elif kind == "foreign":  # the best rows in other token lists
            v = q + noise * (rng.uniform(0.01, 0.03) if i % 17 == 0 else 1.0)
        elif kind == "negative":  # every score below 0: a few just below, the others far below
            v = -q + noise * (0.45 if i % 20 == 0 else 0.01)
            row_tokens = lists[i % 2]
        else:  # unrelated: nothing stands out
            v = noise
        if kind == "unrelated" and i % 50 == 0:
            row_tokens = lists[3]  # too few shared tokens: no score at all
        out.append(Row(f"{prefix}-{i:05d}", {}, None, None, None, None, None, None, row_tokens,
                       _unit(v).astype(np.float16).tobytes(), "2026-01-01T00:00:00"))
    return out


def _best(scores: np.ndarray, names: list[str]) -> list[tuple[str, float]]:
    order = np.argsort(np.where(np.isfinite(scores), -scores, np.inf), kind="stable")[:SHORTLIST]
    return [(names[i], float(scores[i])) for i in order if np.isfinite(scores[i])]


def _same_as_exhaustive(sig, store: Store) -> bool:
    """The indexed shortlist equals the exhaustive one; whether the index answered."""
    known = load_known(store, builtin=False)
    light = store.light()
    exhaustive = retrieval_scores(sig, vector_groups(np.arange(len(light.names)), light.tokens,
                                                     light.retrieval, store.token_lists()), len(light.names))
    indexed = indexed_scores(sig, store, known)
    if indexed is None:
        return False
    want, got = _best(exhaustive, known.names), _best(indexed, known.names)
    assert np.allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=TIE)
    score = dict(zip(known.names, exhaustive, strict=True))
    for (n, _), (m, _) in zip(got, want, strict=True):  # the same rows, but rows tied within TIE
        assert n == m or abs(score[n] - score[m]) <= TIE
    for n in {n for n, _ in got} ^ {n for n, _ in want}:  # swapped only at the boundary, by a tie
        assert abs(score[n] - want[-1][1]) <= TIE
    finite = np.isfinite(indexed)
    assert np.allclose(indexed[finite], exhaustive[finite], rtol=0, atol=TIE)  # exact where scored
    return True


@pytest.mark.parametrize("seed", range(18))
def test_the_indexed_shortlist_is_the_exhaustive_one(query, tmp_path, seed):
    kind = KINDS[seed % len(KINDS)]
    with Store.open(tmp_path / "cat.sqlite", writable=True) as store:
        store.put(_rows(query, seed, kind), replace=False)
        answered = _same_as_exhaustive(query, store)
    assert answered or kind == "unrelated"  # no relatives: the index cannot rule rows out


def _indexed_rowids(store: Store) -> set[int]:
    blocks = store.sketch_blocks()
    assert blocks is not None
    assert all(0 < len(b) <= BLOCK_ROWS for b in blocks)
    ids = [int(r) for b in blocks for r in b.rowids]
    assert len(ids) == len(set(ids))
    return set(ids)


def _signed_rowids(store: Store) -> set[int]:
    return {r for r, v in zip(store.light().rowids, store.light().retrieval, strict=True) if v is not None}


def test_every_write_keeps_the_index_in_step(query, tmp_path, monkeypatch):
    monkeypatch.setattr("tensorguard.catalogue.store.BLOCK_ROWS", 256)  # several blocks per list
    db = tmp_path / "cat.sqlite"
    with Store.open(db, writable=True) as store:
        store.put(_rows(query, 1, "planted", 700), replace=False)
        store.put(_rows(query, 2, "planted", 300, prefix="more"), replace=False)  # tops up blocks
        assert _indexed_rowids(store) == _signed_rowids(store)
        store.put(_rows(query, 3, "negative", 50), replace=True)  # 50 rows replaced
        for name in ("row-00000", "more-00023", "row-00400"):
            assert store.delete(name)
        assert _indexed_rowids(store) == _signed_rowids(store)
        assert _same_as_exhaustive(query, store)
    with sqlite3.connect(db) as con:  # another program changes a vector: the index is stale
        con.execute("UPDATE models SET retrieval = ? WHERE name = 'row-00046'",
                    (_unit(retrieval_vector(query)[1]).astype(np.float16).tobytes(),))
    with Store.open(db) as store:
        assert store.sketch_blocks() is None  # never read: scan streams every vector
        assert indexed_scores(query, store, load_known(store, builtin=False)) is None
    with Store.open(db, writable=True) as store:
        store.put(_rows(query, 4, "planted", 5, prefix="late"), replace=False)  # rebuilt whole
        assert _indexed_rowids(store) == _signed_rowids(store)
        assert _same_as_exhaustive(query, store)
        known = load_known(store, builtin=False)
        best = _best(indexed_scores(query, store, known), known.names)[0]
        assert best[0] == "row-00046" and best[1] > 0.999
    with sqlite3.connect(db) as con:  # a block that does not read as one: not read, then rebuilt
        con.execute("UPDATE retrieval_blocks SET codes = x'00' WHERE id = "
                    "(SELECT min(id) FROM retrieval_blocks)")
    with Store.open(db, writable=True) as store:
        assert store.sketch_blocks() is None
        assert store.delete("late-00001")
        assert _indexed_rowids(store) == _signed_rowids(store)


def test_damaged_vectors_are_said_as_without_the_index(query, tmp_path):
    rows = _rows(query, 5, "planted", 800)
    bad = np.frombuffer(rows[7].retrieval or b"", dtype="<f2").copy()
    bad[3] = np.nan
    rows[7] = Row(rows[7].name, {}, None, None, None, None, None, None, rows[7].retrieval_tokens,
                  bad.tobytes(), rows[7].added_at)
    with Store.open(tmp_path / "cat.sqlite", writable=True) as store:
        store.put(rows, replace=False)
        assert len(_indexed_rowids(store)) == 799  # the damaged row is left to the exact path
        scores = indexed_scores(query, store, load_known(store, builtin=False))
        assert scores is not None and np.isnan(scores[7])
        assert [d.name for d in store.damage.values()] == ["row-00007"]
        store.delete_rows(list(store.damage.values()))  # repair
        assert _indexed_rowids(store) == _signed_rowids(store)
        assert _same_as_exhaustive(query, store)


def test_a_schema_1_file_is_read_as_it_is_and_migrated_on_writing(query, tmp_path):
    db = tmp_path / "cat.sqlite"
    with Store.open(db, writable=True) as store:
        store.put(_rows(query, 6, "planted", 800), replace=False)
    with sqlite3.connect(db) as con:
        drop_index(con)
        con.execute("PRAGMA user_version = 1")
    with Store.open(db) as store:  # read-only: no index, nothing written
        assert store.sketch_blocks() is None
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone() == (1,)
    with Store.open(db, writable=True) as store:
        assert _indexed_rowids(store) == _signed_rowids(store)
        assert _same_as_exhaustive(query, store)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone() == (2,)


def test_a_pack_carries_no_index_and_its_import_is_indexed(query, tmp_path):
    with Store.open(tmp_path / "cat.sqlite", writable=True) as store:
        store.put(_rows(query, 7, "planted", 800), replace=False)
    pack = tmp_path / "cat.tgpack"
    Catalogue(tmp_path / "cat.sqlite", builtin=False).export_pack(pack)
    with sqlite3.connect(pack) as con:
        assert not con.execute("SELECT name FROM sqlite_master WHERE name LIKE 'retrieval%'").fetchall()
    assert read_pack(pack)[0].rows == 800
    Catalogue(tmp_path / "imported.sqlite", builtin=False).import_pack(pack)
    with Store.open(tmp_path / "imported.sqlite") as store:
        assert _indexed_rowids(store) == _signed_rowids(store)
        assert _same_as_exhaustive(query, store)


def test_the_light_columns_read_beside_the_index_are_the_rows_own(query, tmp_path):
    rows = _rows(query, 8, "planted", 300)
    tokens = rows[0].retrieval_tokens
    features, day = np.ones(14).astype("<f8").tobytes(), "2026-01-01T00:00:00"
    nan_vector = np.full(len(rows[0].retrieval or b"") // 2, np.nan).astype("<f2").tobytes()
    odd = [Row("nan-features", {}, None, None, None, None, np.full(14, np.nan).astype("<f8").tobytes(), None,
               tokens, rows[0].retrieval, day),
           Row("nan-vector", {}, "/m", "h", None, None, features, None, tokens, nan_vector, day),
           Row("short-vector", {}, None, None, None, None, None, None, tokens, b"\0" * 10, day),
           Row("fingerprint-only", {}, None, None, None, None, features, None, None, None, day)]
    db = tmp_path / "cat.sqlite"
    with Store.open(db, writable=True) as store:
        store.put(rows + odd, replace=False)

    def light(beside_index: bool) -> tuple[object, list[str]]:
        with Store.open(db) as store:
            if not beside_index:
                store._light_from_index = lambda lists: None  # type: ignore[method-assign]
            else:
                assert store._light_from_index(store.token_lists()) is not None
            found = store.light(vectors=False)
            return found, sorted(str(d) for d in store.damage.values())

    fast, damaged = light(True)
    assert (fast, damaged) == light(False)
    assert [d.split("'")[1] for d in damaged] == ["nan-features", "short-vector"]
    assert "nan-vector" in fast.names and "fingerprint-only" in fast.names  # type: ignore[attr-defined]
    with sqlite3.connect(db) as con:  # changed by another program: read from the rows themselves
        con.execute("UPDATE models SET retrieval = x'0000' WHERE name = 'row-00003'")
    with Store.open(db) as store:
        assert store._light_from_index(store.token_lists()) is None
        assert "row-00003" not in store.light(vectors=False).names
