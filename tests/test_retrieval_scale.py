"""The retrieve step at scale: retrieval vectors streamed chunk by chunk give the exhaustive
search's scores and the same ranked candidates, over several token lists."""

from __future__ import annotations

import numpy as np
import pytest

from lineage_models import base_weights, save
from tensorguard.catalogue import SHORTLIST, Row, Store
from tensorguard.catalogue import retrieval as retrieval_module
from tensorguard.catalogue.retrieval import (
    fingerprint_threshold,
    load_known,
    rank_candidates,
    retrieval_scores,
    stream_scores,
    vector_groups,
)
from tensorguard.errors import TensorguardError
from tensorguard.fingerprints import FEATURE_KEYS, fingerprint
from tensorguard.lineage.distance import load_reference
from tensorguard.signatures import compute_signature, retrieval_vector
from tensorguard.synthetic import finetune

ROWS = 2000
STEP = ROWS // SHORTLIST  # every STEP-th row is planted near the query
VOCAB = [f"tok{i}" for i in range(256)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """``ROWS`` rows in 3 token lists around a query; ``SHORTLIST`` planted near it, signed."""
    root = tmp_path_factory.mktemp("scale")
    query = save(root / "query", finetune(base_weights(0), 0.2, seed=1), VOCAB)
    sig, fp = compute_signature(query), fingerprint(query, samples=2, device="cpu")
    tokens, vector = retrieval_vector(sig)
    lists = [tokens, tuple(f"x{t}" if i % 5 == 0 else t for i, t in enumerate(tokens)),
             tuple(reversed(tokens))]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(ROWS):
        planted = i % STEP == 0 and i // STEP < SHORTLIST
        noise = rng.normal(size=vector.size).astype(np.float32) * (0.01 if planted else 1)
        v = vector.astype(np.float32) + noise
        v = (v - v.mean()) / np.linalg.norm(v - v.mean())
        base = np.asarray([fp.features[k] for k in FEATURE_KEYS])
        features = base * rng.uniform(0.5, 2, len(FEATURE_KEYS))
        rows.append(Row(f"row-{i:05d}", {}, None, None, None, None, features.astype("<f8").tobytes(),
                        sig.to_bytes() if planted else None, tokens if planted else lists[i % 3],
                        v.astype(np.float16).tobytes(), "2026-01-01T00:00:00"))
    db = root / "cat.sqlite"
    with Store.open(db, writable=True) as store:
        store.put(rows, replace=False)
    return db, sig, fp


def test_streamed_scores_equal_the_exhaustive_search(synthetic):
    db, sig, _ = synthetic
    with Store.open(db) as store:
        known = load_known(store, builtin=False)
        light = store.light()
        exhaustive = retrieval_scores(sig, vector_groups(np.arange(ROWS), light.tokens, light.retrieval,
                                                         store.token_lists()), ROWS)
        for chunk in (1, 97, 1000, ROWS * 2):
            streamed = stream_scores(sig, store, known, chunk=chunk)
            assert np.allclose(streamed, exhaustive, rtol=0, atol=1e-6, equal_nan=True)
    assert np.isfinite(exhaustive).all()  # every token list shares enough tokens with the query
    best = np.argsort(-exhaustive, kind="stable")[:SHORTLIST]
    assert {known.names[i] for i in best} == {f"row-{i * STEP:05d}" for i in range(SHORTLIST)}


def test_ranked_candidates_do_not_depend_on_the_chunk(synthetic, monkeypatch):
    db, sig, fp = synthetic
    reference = load_reference(None)
    limit = fingerprint_threshold(reference)

    def ranked(chunk: int) -> list[tuple]:
        monkeypatch.setattr(retrieval_module, "CHUNK_ROWS", chunk)
        with Store.open(db) as store:
            known = load_known(store, builtin=True)
            found = rank_candidates(sig, fp, known, store, reference, limit)
        return [(c.name, c.match, c.score, round(c.retrieval or 0, 5), c.fingerprint_distance) for c in found]

    whole = ranked(ROWS * 2)
    assert ranked(128) == whole
    assert sum(match for _, match, *_ in whole[:SHORTLIST]) == SHORTLIST  # the planted rows match in full


def test_a_catalogue_changed_during_the_scan_is_reported(synthetic, tmp_path):
    db, sig, _ = synthetic
    with Store.open(db) as store:
        known = load_known(store, builtin=False)
    moved = known.__class__(known.names[1:] + ["zzz"], *[getattr(known, f) for f in
                                                        ("origins", "paths", "hashes", "features",
                                                         "builtin_labels")])
    with Store.open(db) as store, pytest.raises(TensorguardError, match="changed while it was scanned"):
        stream_scores(sig, store, moved)
