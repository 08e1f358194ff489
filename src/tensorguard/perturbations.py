"""Seeded probe inputs: the paper's five noise kinds and its three attention-targeted kinds.

Every probe is drawn on the CPU in float32 from a ``torch.Generator`` seeded with ``seed`` (0 by
default, as the reference re-seeds before every probe), so a probe depends only on its kind, its
dimension and, for ``adversarial``, the matrix it attacks: never on the device or the model
being probed. ``Probe.delta`` is the perturbation itself (the probe minus its clean base).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NOISE_KINDS: tuple[str, ...] = (
    "adversarial", "structured", "gaussian", "low_frequency", "high_frequency")
ATTENTION_KINDS: tuple[str, ...] = ("token_focus", "attention_pattern", "head_specific")
ALL_KINDS: tuple[str, ...] = NOISE_KINDS + ATTENTION_KINDS

FGSM_EPSILON = 0.03
NOISE_SCALE = 0.1


@dataclass(frozen=True)
class Probe:
    """One probe input ``x`` (shape ``(dim,)``), its clean ``base`` and ``delta = x - base``."""

    kind: str
    x: torch.Tensor
    base: torch.Tensor
    delta: torch.Tensor


def _keep_bins(x: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
    """``x`` with only the rfft bins ``start:stop`` kept."""
    freq = torch.fft.rfft(x)
    mask = torch.zeros_like(freq)
    mask[start:stop] = 1
    return torch.fft.irfft(freq * mask, n=x.shape[-1])


def _nbins(dim: int) -> int:
    return dim // 2 + 1


def fgsm_step(x: torch.Tensor, matrix: torch.Tensor, target: int,
              epsilon: float = FGSM_EPSILON) -> torch.Tensor:
    """One FGSM step on cross-entropy of ``x @ matrix.T`` against ``target``, in closed form.

    The gradient of the loss with respect to ``x`` is ``(softmax(x A^T) - onehot(target)) A``.
    """
    logits = matrix.to(torch.float32) @ x
    weights = torch.softmax(logits, dim=0)
    weights[target] -= 1.0
    grad = weights @ matrix.to(torch.float32)
    return epsilon * torch.sign(grad)


def make_probe(kind: str, dim: int, fgsm_matrix: torch.Tensor | None = None,
               seed: int = 0) -> Probe:
    """The probe of ``kind`` for an input dimension ``dim``.

    ``fgsm_matrix`` (shape ``(classes, dim)``) is required for ``adversarial``.
    """
    gen = torch.Generator().manual_seed(seed)
    if kind == "attention_pattern":
        positions = torch.arange(dim, dtype=torch.float32)
        pattern = 2.0 * torch.sin(positions * (6.28 / (dim / 8)))
        x = pattern + 0.2 * torch.randn(dim, generator=gen)
        return Probe(kind, x, torch.zeros(dim), x)
    if kind == "head_specific":
        heads, head_dim = 8, dim // 8
        x = 0.1 * torch.randn(dim, generator=gen)
        count = int(torch.randint(1, 4, (1,), generator=gen))
        for h in torch.randperm(heads, generator=gen)[:count].tolist():
            x[h * head_dim:(h + 1) * head_dim] = 2.0 * torch.randn(head_dim, generator=gen)
        return Probe(kind, x, torch.zeros(dim), x)
    base = torch.randn(dim, generator=gen)
    if kind == "adversarial":
        if fgsm_matrix is None:
            raise ValueError("an adversarial probe needs the matrix it attacks")
        target = int(torch.randint(0, fgsm_matrix.shape[0], (1,), generator=gen))
        delta = fgsm_step(base, fgsm_matrix, target)
    elif kind == "structured":
        delta = _keep_bins(base, 0, _nbins(dim) // 4)
    elif kind == "gaussian":
        delta = NOISE_SCALE * torch.randn(dim, generator=gen)
    elif kind == "low_frequency":
        delta = NOISE_SCALE * _keep_bins(base, 0, _nbins(dim) // 8)
    elif kind == "high_frequency":
        delta = NOISE_SCALE * _keep_bins(base, _nbins(dim) // 2, None)
    elif kind == "token_focus":
        mask = torch.zeros(dim)
        mask[torch.randperm(dim, generator=gen)[:dim // 4]] = 3.0
        delta = base * mask
    else:
        raise ValueError(f"unknown perturbation kind {kind!r} (known: {', '.join(ALL_KINDS)})")
    return Probe(kind, base + delta, base, delta)
