"""``scan``: each of the three answers, the vectorised retrieval, the policy rule."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from lineage_models import base_weights, rename, rescale, save
from tensorguard.catalogue import Answer, Catalogue, Evidence, Store, scan
from tensorguard.catalogue.retrieval import load_known, retrieval_scores, stream_scores, vector_groups
from tensorguard.errors import OptionError
from tensorguard.reference import bundled_dir
from tensorguard.signatures import RETRIEVAL_TOKENS, compute_signature, retrieval_vector, similarity, unit
from tensorguard.synthetic import finetune

VOCAB = [f"tok{i}" for i in range(256)]
FAST = {"samples": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Bases alpha and beta catalogued; a disguised fine-tune of alpha; an unrelated gamma."""
    root = tmp_path_factory.mktemp("scan")
    alpha = base_weights(0)
    paths = {
        "alpha": save(root / "alpha", alpha, VOCAB),
        "beta": save(root / "beta", base_weights(1), VOCAB),
        "suspect": save(root / "suspect", rescale(rename(finetune(alpha, 0.3, seed=5), 7), 8), VOCAB),
        "gamma": save(root / "gamma", base_weights(2), VOCAB),
    }
    cat = Catalogue(root / "cat.sqlite")
    rows = {name: cat.measure(paths[name], **FAST) for name in ("alpha", "beta")}
    cat.insert([dataclasses.replace(rows["alpha"], labels={"base": "alpha", "licence": "restricted"}),
                dataclasses.replace(rows["beta"], labels={"base": "beta", "licence": "open"})])
    return paths, cat, rows


def test_a_disguised_finetune_is_derived_from_its_base(world):
    paths, cat, _ = world
    result = scan(paths["suspect"], catalogue=cat, **FAST)
    assert result.answer is Answer.DERIVED and result.base == "alpha"
    best = result.candidates[0]
    assert best.name == "alpha" and best.match and best.confirmation is not None
    assert best.confirmation.verdict == "derived" and best.confirmation.p_value < 1e-3
    beta = next(c for c in result.candidates if c.name == "beta")
    assert not beta.match and beta.score is not None and beta.score < 0.1
    assert result.rows == 2 + 43  # the built-in published fingerprints are scanned too
    assert result.matches({"licence": "restricted"}) and not result.matches({"licence": "open"})


def test_an_unrelated_model_has_no_known_base(world):
    paths, cat, _ = world
    result = scan(paths["gamma"], catalogue=Catalogue(cat.path, builtin=False), **FAST)
    assert result.answer is Answer.NONE and result.base is None
    assert all(not c.match for c in result.candidates)
    assert not result.matches({}, unconfirmed=True)


def test_moved_weights_give_closest_known_not_confirmed(world, tmp_path):
    paths, cat, _ = world
    moved_db = tmp_path / "cat.sqlite"
    shutil.copy(cat.path, moved_db)
    with Store.open(moved_db, writable=True) as store, store.transaction() as con:
        con.execute("UPDATE models SET path = ? WHERE name = 'alpha'", (str(tmp_path / "gone"),))
    result = scan(paths["suspect"], catalogue=moved_db, **FAST)
    assert result.answer is Answer.CLOSEST and result.base == "alpha"
    assert "no longer at" in result.summary
    assert not result.matches({"licence": "restricted"})
    assert result.matches({"licence": "restricted"}, unconfirmed=True)


def test_changed_weights_are_not_used_to_confirm(world, tmp_path):
    paths, cat, _ = world
    changed_db = tmp_path / "cat.sqlite"
    shutil.copy(cat.path, changed_db)
    changed = save(tmp_path / "alpha", base_weights(3), VOCAB)
    with Store.open(changed_db, writable=True) as store, store.transaction() as con:
        con.execute("UPDATE models SET path = ? WHERE name = 'alpha'", (str(changed),))
    result = scan(paths["suspect"], catalogue=changed_db, confirm=1, **FAST)
    assert result.answer is Answer.CLOSEST and "has changed since it was catalogued" in result.summary


def test_without_its_base_the_suspect_has_no_known_base(world, tmp_path):
    paths, _, rows = world
    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    cat.insert([rows["beta"]])
    assert scan(paths["suspect"], catalogue=cat, **FAST).answer is Answer.NONE


def test_fingerprint_rows_never_say_derived(world, tmp_path):
    paths, _, _ = world
    cat = Catalogue(tmp_path / "cat.sqlite")
    cat.import_fingerprints([bundled_dir()])
    result = scan(paths["suspect"], catalogue=cat, **FAST)
    assert result.answer is not Answer.DERIVED
    assert all(c.evidence is Evidence.FINGERPRINT and c.score is None for c in result.candidates)
    assert result.rows == 43


def test_retrieval_is_the_signature_embed_part_for_every_row(world):
    """The vectorised pass equals a per-row computation, also across different token lists."""
    paths, cat, _ = world
    query = compute_signature(paths["suspect"])
    with Store.open(cat.path) as store:
        known = load_known(store, builtin=False)
        light = store.light()
        groups = vector_groups(np.arange(2), light.tokens, light.retrieval, store.token_lists())
        assert np.allclose(stream_scores(query, store, known, chunk=1),  # streamed row by row
                           retrieval_scores(query, groups, 2), rtol=0, atol=1e-6)
    assert known.names == ["alpha", "beta"]
    fast = retrieval_scores(query, groups, len(known.names))
    for name, score in zip(known.names, fast, strict=True):
        direct = similarity(_first(query), _first(compute_signature(paths[name]))).embed
        assert score == pytest.approx(direct, abs=2e-3)
    # a catalogue row whose token list differs is compared over the shared tokens
    (tokens, (ids, vectors)), = groups.items()
    other = tuple(t if i % 5 else f"x{t}" for i, t in enumerate(tokens))
    mixed = retrieval_scores(query, {other: (ids, vectors)}, len(known.names))
    assert np.all(np.isfinite(mixed)) and mixed[0] > 0.5 and abs(mixed[1]) < 0.2
    # ... by sums (matrix-vector products), equal to gathering the shared pairs and correlating
    q_tokens, q_vector = retrieval_vector(query)
    keep = [i for i, t in enumerate(q_tokens) if t in set(other)]
    rows, cols = np.triu_indices(len(keep), 1)
    pairs = [(keep[r], keep[c]) for r, c in zip(rows, cols, strict=True)]
    n = len(q_tokens)
    position = {p: k for k, p in enumerate(zip(*np.triu_indices(n, 1), strict=True))}
    gathered = [position[p] for p in pairs]  # the same tokens: the same positions in both lists
    direct = unit(vectors[:, gathered]) @ unit(q_vector.astype(np.float32)[gathered])
    assert np.allclose(mixed, direct, atol=1e-5)


def _first(sig):
    """The signature restricted to the retrieval tokens (what the retrieval vector holds)."""
    n = RETRIEVAL_TOKENS
    return dataclasses.replace(sig, tokens=sig.tokens[:n], embed=sig.embed[:n, :n])


@pytest.mark.parametrize(("option", "value"), [("top", 0), ("confirm", -1), ("samples", 0), ("blocks", 0)])
def test_bad_options_are_one_line_errors(world, option, value):
    paths, cat, _ = world
    with pytest.raises(OptionError, match=f"{option}={value}"):
        scan(paths["suspect"], catalogue=cat, **{option: value})
