"""Alignment before the independence test: rotated, sliced and re-tokenized derivatives are found
derived; independent models stay independent, and only on positive evidence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lineage_models import SPEC, base_weights, forward, save, write_tokenizer
from tensorguard.lineage import compare
from tensorguard.lineage.alignment import BY_INDEX, BY_STRING, gather_rows, procrustes
from tensorguard.lineage.verdict import MIN_FIT, POWER_RHO, decide, detectable_rho
from tensorguard.loading import open_model
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model
from tensorguard.testing import disguises

TOKENS = disguises.vocabulary(SPEC.vocab)


@pytest.fixture(scope="module")
def tuned():
    return finetune(base_weights(0), 0.05, seed=7)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save(tmp_path_factory.mktemp("base"), base_weights(0), TOKENS)


def _compare(base_dir, tmp_path, w, tokens=TOKENS):
    return compare(base_dir, save(tmp_path / "b", w, tokens), samples=3)


def test_rotation_keeps_the_logits_and_is_derived(base_dir, tmp_path, tuned):
    rotated = disguises.rotate(tuned, SPEC, seed=3)
    tokens = torch.arange(12) * 7
    assert torch.allclose(forward(tuned, tokens), forward(rotated, tokens), atol=1e-4)
    c = _compare(base_dir, tmp_path, rotated)
    assert c.verdict.label == "derived", c.verdict.reason
    al = c.independence.alignment
    assert al.method == "orthogonal" and al.rows_by == BY_STRING and al.fit > 0.9
    assert all(b.rho > 0.9 for b in c.independence.blocks)


@pytest.mark.parametrize("make, method", [
    (lambda w: disguises.quantize_4bit(disguises.rotate(w, SPEC, seed=4)), "orthogonal"),
    (lambda w: disguises.slice_residual(w, SPEC, remove=0.125), "semi-orthogonal"),
    (lambda w: disguises.slice_residual(w, SPEC, remove=0.25), "semi-orthogonal"),
], ids=["rotated-4bit", "sliced-12.5%", "sliced-25%"])
def test_rotated_quantized_and_sliced_copies_are_derived(base_dir, tmp_path, tuned, make, method):
    c = _compare(base_dir, tmp_path, make(tuned))
    assert c.verdict.label == "derived", c.verdict.reason
    assert c.independence.alignment.method == method


@pytest.mark.parametrize("remap", [
    lambda w: disguises.shuffle_vocabulary(w, TOKENS, seed=1),
    lambda w: disguises.insert_tokens(w, TOKENS, count=40, seed=2),
    lambda w: disguises.swap_tokenizer(w, TOKENS, share=0.8, seed=3),
], ids=["shuffled", "inserted", "tokenizer-swap"])
def test_retokenized_copies_are_aligned_by_token_string(base_dir, tmp_path, tuned, remap):
    w, tokens = remap(disguises.rotate(tuned, SPEC, seed=5))
    c = _compare(base_dir, tmp_path, w, tokens)
    assert c.verdict.label == "derived", c.verdict.reason
    assert c.independence.alignment.rows_by == BY_STRING


def test_independent_models_stay_independent_on_positive_evidence(base_dir, tmp_path):
    for seed in (11, 12):
        c = _compare(base_dir, tmp_path / str(seed), base_weights(seed))
        assert c.verdict.label == "independent", c.verdict.reason
        assert c.independence.p_value > 1e-3
        rho = detectable_rho(c.independence)
        assert rho is not None and rho <= POWER_RHO


def test_without_a_tokenizer_rows_are_paired_by_index_and_independence_is_not_claimed(tmp_path, tuned):
    shuffled, _ = disguises.shuffle_vocabulary(disguises.rotate(tuned, SPEC, seed=2), TOKENS, seed=1)
    a, b = save(tmp_path / "a", base_weights(0)), save(tmp_path / "b", shuffled)
    c = compare(a, b, samples=3)
    assert c.independence.alignment.rows_by == BY_INDEX
    assert c.verdict.label == "inconclusive"  # a blind test: never "independent"
    assert "paired by index" in c.verdict.reason
    assert any("no readable tokenizer beside" in n for n in c.notes)
    (tmp_path / "b" / "tokenizer.json").write_text('{"model": 3}')  # unreadable: the same, no error
    assert compare(a, b, samples=3).independence.alignment.rows_by == BY_INDEX


def test_too_little_power_is_inconclusive(tmp_path):
    small = ModelSpec(scheme="llama", hidden=16, layers=1, intermediate=20, vocab=256, heads=2, kv_heads=1)
    a, b = (save_model(make_weights(small, seed), tmp_path / f"{seed}.safetensors") for seed in (0, 1))
    write_tokenizer(tmp_path, TOKENS)
    c = compare(a, b, samples=3)
    rho = detectable_rho(c.independence)  # 20 neurons in one block: rho 0.7 would pass unseen
    assert rho is not None and rho > POWER_RHO
    assert c.independence.p_value > 1e-3 and c.verdict.label == "inconclusive"
    assert "the test could see only rho above" in c.verdict.reason


def test_procrustes_recovers_rotations_and_slices():
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(500, 32, generator=gen, dtype=torch.float64)
    x = torch.linalg.qr(raw - raw.mean(dim=0))[0] * 3  # centred, isotropic rows
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen, dtype=torch.float64))
    w, fit = procrustes(x @ q, x)
    assert torch.allclose(w, q.T, atol=1e-8) and fit == pytest.approx(1.0)
    w, fit = procrustes(x @ q[:, :24], x)  # a slice: mapped into the subspace it kept
    assert w.shape == (24, 32) and torch.allclose(w @ w.T, torch.eye(24, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(w, q[:, :24].T, atol=1e-8) and fit == pytest.approx((24 / 32) ** 0.5)


def test_gather_rows_streams_any_order(tmp_path, monkeypatch):
    from tensorguard.lineage import alignment

    monkeypatch.setattr(alignment, "BLOCK_ELEMENTS", 8 * 5)  # several row blocks
    x = torch.randn(100, 8, generator=torch.Generator().manual_seed(1))
    with open_model(save_model({"emb.weight": x}, tmp_path / "m.safetensors")) as source:
        rows = np.array([93, 4, 50, 51, 7, 4])
        assert torch.equal(gather_rows(source, "emb.weight", rows), x[rows])
        assert torch.equal(gather_rows(source, "emb.weight", np.arange(3, 9)), x[3:9])


def test_hadamard_rotation_is_the_orthogonal_map_it_names(tuned):
    right, left = disguises.hadamard_rotation(SPEC.hidden, seed=1)
    r = right(torch.eye(SPEC.hidden))
    assert torch.allclose(r @ r.T, torch.eye(SPEC.hidden), atol=1e-5)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(5, SPEC.hidden, generator=gen), torch.randn(SPEC.hidden, 7, generator=gen)
    assert torch.allclose(right(x), x @ r, atol=1e-5) and torch.allclose(left(y), r.T @ y, atol=1e-5)
    rotated = disguises.map_residual(tuned, right, left, SPEC.hidden)
    tokens = torch.arange(10) * 5
    assert torch.allclose(forward(tuned, tokens), forward(rotated, tokens), atol=1e-4)


def test_scan_confirms_rotated_sliced_and_retokenized_copies(base_dir, tmp_path, tuned):
    from tensorguard.catalogue import Answer, Catalogue, scan

    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    other = save(tmp_path / "other", base_weights(1), TOKENS)
    cat.insert([cat.measure(base_dir, samples=2, device="cpu"), cat.measure(other, samples=2, device="cpu")])
    suspects = {
        "rotated": (disguises.quantize_4bit(disguises.rotate(tuned, SPEC, seed=6)), TOKENS),
        "sliced": (disguises.slice_residual(tuned, SPEC, remove=0.25), TOKENS),
        "retokenized": disguises.swap_tokenizer(disguises.rotate(tuned, SPEC, seed=7), TOKENS, share=0.8,
                                                seed=1),
    }
    for name, (w, tokens) in suspects.items():
        found = scan(save(tmp_path / name, w, tokens), catalogue=cat, samples=2, device="cpu")
        assert found.answer is Answer.DERIVED and found.base == base_dir.name, (name, found.summary)
    unrelated = scan(save(tmp_path / "unrelated", base_weights(2), TOKENS), catalogue=cat, samples=2,
                     device="cpu")
    assert unrelated.answer is Answer.NONE


def test_vocabularies_without_shared_strings_make_the_test_not_applicable(base_dir, tmp_path, tuned):
    c = _compare(base_dir, tmp_path, tuned, [f"other{i}" for i in range(SPEC.vocab)])
    assert not c.independence.applicable and "share no token strings" in c.independence.reason
    assert c.verdict.label != "independent"


def test_a_rejection_through_a_poorly_fitting_alignment_is_not_derived(base_dir, tmp_path, tuned):
    """Independent models trained alike have embeddings alike up to a rotation: the map Procrustes
    fits makes their neurons correlate and the test can reject. Below ``MIN_FIT`` such a rejection
    is no evidence of derivation."""
    c = _compare(base_dir, tmp_path, tuned)
    test = c.independence
    assert c.verdict.label == "derived" and test.alignment.fit >= MIN_FIT
    misfit = dataclasses.replace(test, alignment=dataclasses.replace(test.alignment, fit=MIN_FIT / 2))
    verdict = decide(c.fingerprint, c.evidence["weights"], misfit, c.evidence["signature"])
    assert verdict.label == "derived" and not verdict.reason.startswith("independence test")  # by cosine
    weights = dataclasses.replace(c.evidence["weights"], matrix_cosine=0.0)
    verdict = decide(c.fingerprint, weights, misfit, None)
    assert verdict.label == "inconclusive" and "fits poorly" in verdict.reason
