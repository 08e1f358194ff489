"""``scan``: each of the three answers, the vectorised retrieval, the CI exit-code rule."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lineage_models import base_weights, rename, rescale, save
from tensorguard.catalogue import add_models, import_fingerprints
from tensorguard.catalogue.store import Store
from tensorguard.errors import TensorguardError
from tensorguard.reference import bundled_dir
from tensorguard.scan import (
    POLICY_EXIT_CODE,
    Answer,
    _load,
    policy_exit_code,
    retrieval_scores,
    scan_model,
)
from tensorguard.signature import RETRIEVAL_TOKENS, signature_of, similarity
from tensorguard.synthetic import finetune

VOCAB = [f"tok{i}" for i in range(256)]


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
    db = root / "cat.sqlite"
    add_models([paths["alpha"]], db=db, labels={"base": "alpha", "licence": "restricted"}, device="cpu")
    add_models([paths["beta"]], db=db, labels={"base": "beta", "licence": "open"}, device="cpu")
    return paths, db


def test_a_disguised_finetune_is_derived_from_its_base(world):
    paths, db = world
    result = scan_model(paths["suspect"], db=db, device="cpu")
    assert result.answer is Answer.DERIVED and result.base == "alpha"
    best = result.candidates[0]
    assert best.name == "alpha" and best.match and best.confirmation is not None
    assert best.confirmation.verdict == "derived" and best.confirmation.p_value < 1e-3
    beta = next(c for c in result.candidates if c.name == "beta")
    assert not beta.match and beta.score is not None and beta.score < 0.1
    assert policy_exit_code([result]) == POLICY_EXIT_CODE
    assert policy_exit_code([result], policy={"licence": "open"}) == 0


def test_an_unrelated_model_has_no_known_base(world):
    paths, db = world
    result = scan_model(paths["gamma"], db=db, device="cpu")
    assert result.answer is Answer.NONE and result.base is None
    assert all(not c.match for c in result.candidates)
    assert policy_exit_code([result], unconfirmed=True) == 0


def test_moved_weights_give_closest_known_not_confirmed(world, tmp_path):
    paths, db = world
    moved_db = tmp_path / "cat.sqlite"
    shutil.copy(db, moved_db)
    moved = tmp_path / "alpha"
    shutil.copytree(paths["alpha"], moved)
    with Store.open(moved_db, writable=True) as store, store.transaction() as con:
        con.execute("UPDATE models SET path = ? WHERE name = 'alpha'", (str(tmp_path / "gone"),))
    result = scan_model(paths["suspect"], db=moved_db, device="cpu")
    assert result.answer is Answer.CLOSEST and result.base == "alpha"
    assert "no longer at" in result.summary
    assert policy_exit_code([result]) == 0
    assert policy_exit_code([result], unconfirmed=True) == POLICY_EXIT_CODE


def test_changed_weights_are_not_used_to_confirm(world, tmp_path):
    paths, db = world
    changed_db = tmp_path / "cat.sqlite"
    shutil.copy(db, changed_db)
    changed = save(tmp_path / "alpha", base_weights(3), VOCAB)
    with Store.open(changed_db, writable=True) as store, store.transaction() as con:
        con.execute("UPDATE models SET path = ? WHERE name = 'alpha'", (str(changed),))
    result = scan_model(paths["suspect"], db=changed_db, device="cpu")
    assert result.answer is Answer.CLOSEST and "has changed since it was catalogued" in result.summary


def test_without_its_base_the_suspect_has_no_known_base(world, tmp_path):
    paths, _ = world
    db = tmp_path / "cat.sqlite"
    add_models([paths["beta"]], db=db, device="cpu")
    result = scan_model(paths["suspect"], db=db, device="cpu", builtin=False)
    assert result.answer is Answer.NONE


def test_fingerprint_rows_never_say_derived(world, tmp_path):
    paths, _ = world
    db = tmp_path / "cat.sqlite"
    import_fingerprints([bundled_dir()], db=db)
    result = scan_model(paths["suspect"], db=db, device="cpu")
    assert result.answer is not Answer.DERIVED
    assert all(c.evidence == "fingerprint" and c.score is None for c in result.candidates)
    assert result.rows == 43


def test_retrieval_is_the_signature_embed_part_for_every_row(world):
    """The vectorised pass equals a per-row computation, also across different token lists."""
    paths, db = world
    query = signature_of(paths["suspect"])
    with Store.open(db) as store:
        known = _load(store, builtin=False)
    assert known.names == ["alpha", "beta"]
    fast = retrieval_scores(query, known.groups, len(known.names))
    for name, score in zip(known.names, fast):
        direct = similarity(_first(query), _first(signature_of(paths[name]))).embed
        assert score == pytest.approx(direct, abs=2e-3)
    # a catalogue row whose token list differs is compared over the shared tokens
    (tokens, (ids, vectors)), = known.groups.items()
    other = tuple(t if i % 5 else f"x{t}" for i, t in enumerate(tokens))
    mixed = retrieval_scores(query, {other: (ids, vectors)}, len(known.names))
    assert np.all(np.isfinite(mixed)) and mixed[0] > 0.5 and abs(mixed[1]) < 0.2


def _first(sig):
    """The signature restricted to the retrieval tokens (what the retrieval vector holds)."""
    from dataclasses import replace

    n = RETRIEVAL_TOKENS
    return replace(sig, tokens=sig.tokens[:n], embed=sig.embed[:n, :n])


def test_bad_options_are_one_line_errors(world):
    paths, db = world
    with pytest.raises(TensorguardError, match="--top"):
        scan_model(paths["suspect"], db=db, top=0)
