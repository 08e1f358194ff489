"""The tree's batched computations give what one matrix at a time gives: a model's grids and 16-bit
tests over all its sketches at once, the direction cues over arrays, and the low-rank tails settled
from Gram eigenvalues (or a bound) exactly as the singular values settle them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks.lineage_corpus import merge, prune_magnitude, quantize_4bit, quantize_int8

from tensorguard.genealogy import ModelProfile, profile
from tensorguard.genealogy.artefacts import FULL, grid_of
from tensorguard.genealogy.direction import CUES, KURTOSIS, ZERO_MARGIN
from tensorguard.genealogy.kinds import (
    EXACT,
    LOW_RANK,
    RESCALED,
    _exact_tail,
    _tails,
    _within,
    exactly_low_rank,
    rescaled,
)
from tensorguard.synthetic import ModelSpec, finetune, low_rank_update, make_weights, save_model
from tensorguard.testing.disguises import rescale

SPEC = ModelSpec(hidden=64, layers=2, intermediate=128, vocab=256)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelProfile]:
    root = tmp_path_factory.mktemp("batched")
    base = make_weights(SPEC, 0)
    ft = finetune(base, 0.3, 1)
    weights = {"base": base, "ft": ft, "int8": quantize_int8(ft), "4bit": quantize_4bit(base),
               "pruned": prune_magnitude(base), "lora": low_rank_update(base, 4, 0.3, 5),
               "merged": merge(base, ft), "bf16": base, "rescaled": rescale(ft, SPEC, seed=3)}
    return {name: profile(save_model(w, root / name,
                                     dtype=torch.bfloat16 if name == "bf16" else torch.float32))
            for name, w in weights.items()}


def _one_matrix(values: np.ndarray) -> tuple[int, str | None, float, float, float]:
    """(bits, grid, zeros, rms, kurtosis) of one sketch, one matrix at a time."""
    flat = values.reshape(-1)
    grid = grid_of(values)
    as32 = flat.astype(np.float32)
    cast = bool(((as32.view(np.uint32) & 0xFFFF) == 0).all()
                or (as32.astype(np.float16).astype(np.float32) == as32).all())
    centred = flat - flat.mean()
    squares = centred * centred
    m2 = float(squares.mean())
    kurtosis = float((squares * squares).mean()) / m2 ** 2 if m2 > 0 else float("nan")
    bits = min(grid.bits if grid else FULL, 16 if cast else FULL)
    rms = math.sqrt(float((flat * flat).mean()))
    return bits, grid.name if grid else None, float((flat == 0).mean()), rms, kurtosis


def test_profiles_equal_those_of_one_matrix_at_a_time(models: dict[str, ModelProfile]) -> None:
    seen = set()
    for p in models.values():
        for m in p.matrices.values():
            assert (m.bits, m.grid, m.zeros, m.rms, m.kurtosis) == _one_matrix(m.sketch)
            seen.add((m.bits, m.grid))
    assert {b for b, _ in seen} == {4, 8, 16, 32}  # every artefact is in the comparison


def test_cues_over_arrays_vote_as_a_loop_over_matrices(models: dict[str, ModelProfile]) -> None:
    def loop(a: ModelProfile, b: ModelProfile, cue: str) -> float:
        def one(x: float, y: float) -> int:
            return int(np.sign(x - y))
        votes = {"precision": lambda m, n: one(m.bits, n.bits),
                 "sparsity": lambda m, n: one(n.zeros, m.zeros) if abs(n.zeros - m.zeros) > ZERO_MARGIN
                 else 0,
                 "drift": lambda m, n: one(n.rms, m.rms),
                 "kurtosis": lambda m, n: one(n.kurtosis, m.kurtosis)}
        return float(np.mean([votes[cue](a.matrices[k], b.matrices[k]) for k in a.matrices]))

    for a in models.values():
        for b in models.values():
            for cue in [c for c in CUES if c.name in ("precision", "sparsity", "drift")] + [KURTOSIS]:
                assert cue.vote(a, b) == loop(a, b, cue.name)


def test_rescaling_decided_once_a_majority_is_votes_as_all_matrices_do(
        models: dict[str, ModelProfile]) -> None:
    def loop(a: ModelProfile, b: ModelProfile) -> bool:
        votes = []
        for name, m in a.matrices.items():
            p, c = m.sketch, b.matrices[name].sketch
            if np.array_equal(p, c):
                continue
            nonzero = p != 0
            if ((c == 0) != ~nonzero).any():
                votes.append(False)
                continue
            ratio = np.log(np.abs(np.where(nonzero, c, 1.0) / np.where(nonzero, p, 1.0)))
            centred = (ratio - ratio.mean(axis=1, keepdims=True) - ratio.mean(axis=0, keepdims=True)
                       + ratio.mean())
            votes.append(float(centred[nonzero].std()) <= RESCALED)
        return bool(votes) and float(np.mean(votes)) > 0.5

    answers = {(a, b): rescaled(models[a], models[b]) for a in models for b in models}
    assert answers == {(a, b): loop(models[a], models[b]) for a in models for b in models}
    assert answers["ft", "rescaled"] and not answers["base", "ft"]


@pytest.mark.parametrize(("parent", "child"), [("base", "ft"), ("base", "lora"), ("ft", "lora"),
                                                ("base", "merged"), ("lora", "base")])
def test_tails_settle_as_the_singular_values_do(models: dict[str, ModelProfile], parent: str,
                                                child: str) -> None:
    tails = _tails(models[parent], models[child])
    assert tails
    for estimate, delta in tails:
        exact = _exact_tail(delta)
        for threshold in (EXACT, 1 - LOW_RANK):
            assert _within(estimate, delta, threshold) == (exact <= threshold)
        assert estimate <= exact + 1e-10  # the eigenvalues' share, or a lower bound of it
        if estimate <= 1 - LOW_RANK:
            assert abs(estimate - exact) < 1e-10


def test_a_merged_adapter_is_exactly_low_rank_and_a_fine_tune_is_not(models: dict[str, ModelProfile]) -> None:
    assert all(_within(t, d, EXACT) for t, d in _tails(models["base"], models["lora"]))
    assert not any(_within(t, d, 1 - LOW_RANK) for t, d in _tails(models["base"], models["ft"]))


def test_profiles_hold_the_matrix_shapes(tmp_path: Path) -> None:
    w = make_weights(SPEC, 2)
    p = profile(save_model(w, tmp_path / "m"))
    expected = {n: tuple(t.shape) for n, t in w.items() if t.ndim == 2}
    assert {n: m.shape for n, m in p.matrices.items()} == expected


def test_exact_low_rank_read_a_few_matrices_at_a_time_answers_as_all_at_once(
        models: dict[str, ModelProfile]) -> None:
    def at_once(a: ModelProfile, b: ModelProfile) -> bool:
        exact = [_exact_tail(d) <= EXACT for _, d in _tails(a, b)]
        return bool(exact) and float(np.mean(exact)) > 0.5

    answers = {(a, b): exactly_low_rank(models[a], models[b]) for a in models for b in models if a != b}
    assert answers == {(a, b): at_once(models[a], models[b]) for a, b in answers}
    assert answers["base", "lora"] and not answers["base", "ft"]
