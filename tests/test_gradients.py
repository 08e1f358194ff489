"""The closed-form gradient statistics equal the autograd + scipy reference of the same maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from tensorguard.loading import open_model
from tensorguard.probes import NOISE_KINDS, make_probe
from tensorguard.probes.gradients import (
    GradientStats,
    autograd_statistics,
    closed_form_statistics,
    gradient_matrix,
    responses,
)
from tensorguard.synthetic import ModelSpec, make_weights, save_model

STATS = ("mean", "std", "norm", "skewness", "kurtosis")


def closed(weight: torch.Tensor, x: torch.Tensor) -> GradientStats:
    y = weight.to(torch.float64) @ x.to(torch.float64)
    return closed_form_statistics(y[:, None], x[:, None])[0]


def assert_close(got: GradientStats, want: GradientStats, rel: float) -> None:
    # The mean of G is a difference of two nearly equal sums (positive and negative entries), so
    # the float32 rounding of each entry (about 6e-8 of the entries' scale, i.e. of the std) bounds
    # its accuracy in absolute terms; its floor is therefore relative to the std, not the mean.
    assert got.mean == pytest.approx(want.mean, rel=rel, abs=rel * want.std / 10)
    for s in STATS[1:]:
        assert getattr(got, s) == pytest.approx(getattr(want, s), rel=rel, abs=1e-12), s


CASES = [((48, 32), "gaussian"), ((32, 96), "structured"), ((200, 16), "adversarial"),
         ((16, 200), "low_frequency"), ((65, 33), "high_frequency"), ((1, 40), "gaussian"),
         ((40, 1), "structured")]


@pytest.mark.parametrize(("shape", "kind"), CASES)
def test_closed_form_equals_float32_autograd(shape: tuple[int, int], kind: str) -> None:
    gen = torch.Generator().manual_seed(shape[0] * 1000 + shape[1])
    weight = 0.02 * torch.randn(shape, generator=gen) + 0.01  # a non-zero mean: the mean matters
    x = make_probe(kind, shape[1], weight).x
    assert_close(closed(weight, x), autograd_statistics(weight, x), rel=1e-5)


@pytest.mark.parametrize(("shape", "kind"), CASES)
def test_closed_form_equals_float64_autograd_tightly(shape: tuple[int, int], kind: str) -> None:
    gen = torch.Generator().manual_seed(7 + shape[0])
    weight = torch.randn(shape, generator=gen) ** 3  # heavy tails: large skewness and kurtosis
    x = make_probe(kind, shape[1], weight).x
    assert_close(closed(weight, x), autograd_statistics(weight, x, dtype=torch.float64), rel=1e-9)


def test_autograd_reference_matches_scipy_definitions() -> None:
    gen = torch.Generator().manual_seed(3)
    weight, x = torch.randn(30, 20, generator=gen), torch.randn(20, generator=gen)
    g = (weight @ x / torch.linalg.vector_norm(weight @ x))[:, None] * x[None, :]
    np.testing.assert_allclose(gradient_matrix(weight, x).numpy(), g.numpy(), rtol=1e-5, atol=1e-8)
    ref = autograd_statistics(weight, x, dtype=torch.float64)
    g64 = gradient_matrix(weight, x, torch.float64).numpy().ravel()
    assert ref == GradientStats(float(np.mean(g64)), float(np.std(g64)), float(np.linalg.norm(g64)),
                                float(stats.skew(g64)), float(stats.kurtosis(g64)))


def test_statistics_are_the_papers_definitions_on_a_hand_example() -> None:
    weight = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    x = torch.tensor([1.0, 1.0])  # y = (3, 4), u = (0.6, 0.8), G = [[0.6, 0.6], [0.8, 0.8]]
    got = closed(weight, x)
    assert got.mean == pytest.approx(0.7)
    assert got.std == pytest.approx(0.1)
    assert got.norm == pytest.approx(2**0.5)  # ||x||
    assert got.skewness == pytest.approx(0.0, abs=1e-9)
    assert got.kurtosis == pytest.approx(-2.0)  # two equally likely values


def test_zero_response_and_constant_gradient_give_finite_statistics() -> None:
    x = torch.randn(8, generator=torch.Generator().manual_seed(0))
    zero = closed(torch.zeros(5, 8), x)
    assert zero == GradientStats(0.0, 0.0, 0.0, 0.0, 0.0)
    assert autograd_statistics(torch.zeros(5, 8), x) == zero  # autograd: zero gradient at y = 0
    const = closed(torch.ones(4, 6), torch.ones(6))  # every entry 0.5
    assert (const.mean, const.std, const.skewness, const.kurtosis) == (0.5, 0.0, 0.0, 0.0)
    assert const.norm == pytest.approx(6**0.5)


def test_subsampled_reference_keeps_exact_moments_and_estimates_shape() -> None:
    gen = torch.Generator().manual_seed(1)
    weight, x = torch.randn(300, 100, generator=gen), torch.randn(100, generator=gen)
    full = autograd_statistics(weight, x, dtype=torch.float64)
    sub = autograd_statistics(weight, x, dtype=torch.float64, subsample=5000)
    assert (sub.mean, sub.std, sub.norm) == (full.mean, full.std, full.norm)
    assert sub.skewness != full.skewness
    assert sub.kurtosis == pytest.approx(full.kurtosis, rel=0.3)


def test_responses_streams_row_blocks_on_any_block_size(tmp_path) -> None:
    weights = make_weights(ModelSpec(layers=1, vocab=100), seed=0)
    path = save_model(weights, tmp_path / "m.safetensors", dtype=torch.bfloat16)
    xs = torch.stack([make_probe(k, 64, weights["lm_head.weight"]).x for k in NOISE_KINDS], dim=1)
    want = weights["lm_head.weight"].to(torch.bfloat16).to(torch.float64) @ xs.to(torch.float64)
    with open_model(path) as source:
        whole = responses(source, "lm_head.weight", probes=xs)
        blocks = responses(source, "lm_head.weight", probes=xs, max_elements=64 * 7)  # ragged end
    assert whole.dtype == torch.float64 and whole.shape == (100, 5)
    torch.testing.assert_close(whole, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(blocks, want, rtol=1e-12, atol=1e-12)
