"""Probes follow the paper's reference recipe, drawn on the CPU from a generator re-seeded each time."""

from __future__ import annotations

import pytest
import torch

from paper_reference import reference_probe
from tensorguard import perturbations
from tensorguard.perturbations import (
    ALL_KINDS,
    ATTENTION_KINDS,
    NOISE_KINDS,
    RowReader,
    fgsm_step,
    make_probe,
    make_probes,
)


@pytest.mark.parametrize("dim", [64, 97, 2048])
@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_kinds_follow_the_reference_recipe(kind: str, dim: int) -> None:
    matrix = 0.05 * torch.randn(300, dim, generator=torch.Generator().manual_seed(dim))
    probe = make_probe(kind, dim, matrix)
    want = reference_probe(kind, dim, matrix)
    assert probe.x.dtype == torch.float32 and probe.x.shape == (dim,)
    if kind in ("gaussian", "adversarial"):  # no FFT involved: bit-identical
        assert torch.equal(probe.x, want)
    else:  # the FFT runs in float64 here, float32 in the recipe: at most an ulp apart
        torch.testing.assert_close(probe.x, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(probe.base + probe.delta, probe.x, rtol=0, atol=1e-6)
    assert torch.equal(probe.base, torch.randn(dim, generator=torch.Generator().manual_seed(0)))


def test_probes_are_reseeded_so_they_repeat() -> None:
    matrix = torch.randn(10, 32)
    for kind in ALL_KINDS:
        assert torch.equal(make_probe(kind, 32, matrix).x, make_probe(kind, 32, matrix).x), kind
    assert not torch.equal(make_probe("gaussian", 32, seed=1).x, make_probe("gaussian", 32).x)


def test_streamed_fgsm_matrix_gives_the_same_step(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(5)
    matrix = (0.02 * torch.randn(1000, 48, generator=gen)).to(torch.bfloat16)
    x = torch.randn(48, generator=gen)
    whole = fgsm_step(x, matrix, target=777)
    monkeypatch.setattr(perturbations, "BLOCK_ELEMENTS", 48 * 64)  # 16 blocks, a ragged last one
    reads: list[tuple[int, int]] = []

    def rows(start: int, stop: int) -> torch.Tensor:
        reads.append((start, stop))
        return matrix[start:stop]

    streamed = fgsm_step(x, RowReader((1000, 48), rows), target=777)
    assert torch.equal(whole, streamed)
    assert len(reads) == 16 and reads[-1] == (960, 1000)  # one pass over the rows
    leaf = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy((leaf @ matrix.float().T)[None], torch.tensor([777]))
    loss.backward()
    assert leaf.grad is not None
    assert torch.equal(whole, 0.03 * leaf.grad.sign())


def test_batched_adversarial_probes_equal_single_ones_in_one_pass() -> None:
    gen = torch.Generator().manual_seed(9)
    matrix = 0.05 * torch.randn(500, 40, generator=gen)
    passes = []

    def rows(start: int, stop: int) -> torch.Tensor:
        passes.append(start)
        return matrix[start:stop]

    batch = make_probes("adversarial", 40, [0, 1, 2, 3], RowReader((500, 40), rows))
    assert passes == [0]  # four probes, one pass over the matrix
    for seed, probe in enumerate(batch):
        single = make_probe("adversarial", 40, matrix, seed=seed)
        assert torch.equal(probe.x, single.x) and torch.equal(probe.delta, single.delta)
    assert [p.x for p in make_probes("gaussian", 40, [0, 5])][1].equal(make_probe("gaussian", 40, seed=5).x)


def test_attention_kinds_have_the_requested_width() -> None:
    for kind in ATTENTION_KINDS:
        probe = make_probe(kind, 64)
        assert probe.x.shape == (64,) and torch.isfinite(probe.x).all()


def test_bad_requests_raise() -> None:
    with pytest.raises(ValueError, match="unknown perturbation kind"):
        make_probe("sideways", 8)
    with pytest.raises(ValueError, match="needs the matrix"):
        make_probe("adversarial", 8)
