"""The paper's probe recipe written plainly (float32 FFTs, autograd FGSM): the slow path tests compare to."""

from __future__ import annotations

import torch


def reference_probe(kind: str, dim: int, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's recipe written plainly: float32 FFTs and an autograd FGSM step."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, dim), generator=gen)

    def keep(start: int, stop: int | None) -> torch.Tensor:
        freq = torch.fft.rfft(x)
        mask = torch.zeros_like(freq)
        mask[..., start:stop] = 1
        return torch.fft.irfft(freq * mask, n=dim)

    bins = dim // 2 + 1
    if kind == "adversarial":
        assert matrix is not None
        leaf = x.clone().requires_grad_(True)
        target = torch.randint(0, matrix.shape[0], (1,), generator=gen)
        torch.nn.functional.cross_entropy(leaf @ matrix.T, target).backward()
        assert leaf.grad is not None
        out = leaf + 0.03 * leaf.grad.sign()
    elif kind == "structured":
        out = x + keep(0, bins // 4)
    elif kind == "low_frequency":
        out = x + 0.1 * keep(0, bins // 8)
    elif kind == "high_frequency":
        out = x + 0.1 * keep(bins // 2, None)
    else:
        out = x + torch.randn(x.shape, generator=gen) * 0.1
    return out.detach()[0]
