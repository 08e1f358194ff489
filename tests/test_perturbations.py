"""Probes follow the paper's reference recipe, drawn on the CPU from a generator re-seeded each time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from paper_reference import reference_probe
from tensorguard.errors import TensorguardError
from tensorguard.loading import ModelSource, open_model
from tensorguard.probes import (
    ALL_KINDS,
    ATTENTION_KINDS,
    KINDS,
    NOISE_KINDS,
    MatrixRows,
    fgsm_step,
    make_probe,
    make_probes,
)


def stored(tmp_path: Path, matrix: torch.Tensor, monkeypatch: pytest.MonkeyPatch,
           reads: list[tuple[int, int]]) -> ModelSource:
    """``matrix`` as the only tensor of a safetensors file, with every row read recorded."""
    save_file({"m.weight": matrix.contiguous()}, str(tmp_path / "m.safetensors"))
    source = open_model(tmp_path / "m.safetensors")
    read_rows = source.read_rows

    def recording(name: str, start: int, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        reads.append((start, stop))
        return read_rows(name, start, stop, dtype)

    monkeypatch.setattr(source, "read_rows", recording)
    return source


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


def test_streamed_fgsm_matrix_gives_the_same_step(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(5)
    matrix = (0.02 * torch.randn(1000, 48, generator=gen)).to(torch.bfloat16)
    x = torch.randn(48, generator=gen)
    whole = fgsm_step(x, matrix, target=777)
    reads: list[tuple[int, int]] = []
    source = stored(tmp_path, matrix, monkeypatch, reads)
    streamed = fgsm_step(x, MatrixRows(source, "m.weight", max_elements=48 * 64), target=777)
    assert torch.equal(whole, streamed)  # 16 blocks, a ragged last one
    assert len(reads) == 16 and reads[-1] == (960, 1000)  # one pass over the rows
    leaf = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy((leaf @ matrix.float().T)[None], torch.tensor([777]))
    loss.backward()
    assert leaf.grad is not None
    assert torch.equal(whole, 0.03 * leaf.grad.sign())


def test_batched_adversarial_probes_equal_single_ones_in_one_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(9)
    matrix = 0.05 * torch.randn(500, 40, generator=gen)
    passes: list[tuple[int, int]] = []
    source = stored(tmp_path, matrix, monkeypatch, passes)
    batch = make_probes("adversarial", 40, [0, 1, 2, 3], MatrixRows(source, "m.weight"))
    assert passes == [(0, 500)]  # four probes, one pass over the matrix
    for seed, probe in enumerate(batch):
        single = make_probe("adversarial", 40, matrix, seed=seed)
        assert torch.equal(probe.x, single.x) and torch.equal(probe.delta, single.delta)
    assert [p.x for p in make_probes("gaussian", 40, [0, 5])][1].equal(make_probe("gaussian", 40, seed=5).x)


def test_attention_kinds_have_the_requested_width() -> None:
    for kind in ATTENTION_KINDS:
        probe = make_probe(kind, 64)
        assert probe.x.shape == (64,) and torch.isfinite(probe.x).all()


def test_bad_requests_raise() -> None:
    with pytest.raises(TensorguardError, match="unknown perturbation kind"):
        make_probe("sideways", 8)
    with pytest.raises(ValueError, match="needs the matrix"):
        make_probe("adversarial", 8)


def test_kinds_are_a_registry_in_the_papers_order() -> None:
    assert NOISE_KINDS == ("adversarial", "structured", "gaussian", "low_frequency", "high_frequency")
    assert ATTENTION_KINDS == ("token_focus", "attention_pattern", "head_specific")
    assert tuple(KINDS) == ALL_KINDS == NOISE_KINDS + ATTENTION_KINDS
    assert [k for k, v in KINDS.items() if v.needs_matrix] == ["adversarial"]
