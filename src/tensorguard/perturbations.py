"""Seeded probe inputs: the paper's five noise kinds and its three attention-targeted kinds.

Every probe is drawn on the CPU in float32 from a ``torch.Generator`` seeded with ``seed`` (0 by
default, as the reference re-seeds before every probe), so a probe depends only on its kind, its
dimension and, for ``adversarial``, the matrix it attacks: never on the device or the model
being probed. ``Probe.delta`` is the perturbation itself (the probe minus its clean base).

Frequency masks and the FGSM gradient are computed in float64 and only the perturbation is rounded
to float32, so a probe does not change with the FFT or BLAS build (only a float64 result within
half a float32 ulp of a rounding boundary could). The FGSM matrix may be a ``RowReader``, streamed
in row blocks with an online softmax, so attacking a 128256 x 2048 embedding never needs it whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


@dataclass(frozen=True)
class RowReader:
    """A matrix read in row blocks: ``rows(start, stop)`` returns rows ``start:stop``."""

    shape: tuple[int, int]
    rows: Callable[[int, int], torch.Tensor]


#: Elements per row block when streaming a matrix (32 MB in float64).
BLOCK_ELEMENTS = 1 << 22


def row_blocks(matrix: torch.Tensor | RowReader,
               device: str | torch.device = "cpu") -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, rows)`` blocks of ``matrix`` as float64 on ``device``, weights rounded to float32
    first as the paper does (exact for bf16/f16/f32). Each block is a view of one reused buffer
    (fresh allocations cost more than the arithmetic): use it before taking the next one.
    """
    rows, cols = matrix.shape
    step = max(1, BLOCK_ELEMENTS // max(cols, 1))
    read = matrix.rows if isinstance(matrix, RowReader) else lambda a, b: matrix[a:b]
    buffer = torch.empty((min(step, rows), cols), dtype=torch.float64, device=device)
    for start in range(0, rows, step):
        block = read(start, min(start + step, rows))
        if block.dtype == torch.float64:
            block = block.to(torch.float32)
        out = buffer[:block.shape[0]]
        out.copy_(block)
        yield start, out


def _keep_bins(x: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
    """``x`` with only the rfft bins ``start:stop`` kept (computed in float64, returned in float32)."""
    freq = torch.fft.rfft(x.to(torch.float64))
    mask = torch.zeros_like(freq)
    mask[start:stop] = 1
    return torch.fft.irfft(freq * mask, n=x.shape[-1]).to(torch.float32)


def _nbins(dim: int) -> int:
    return dim // 2 + 1


def fgsm_step(x: torch.Tensor, matrix: torch.Tensor | RowReader, target: int | list[int],
              epsilon: float = FGSM_EPSILON) -> torch.Tensor:
    """One FGSM step on cross-entropy of ``x @ matrix.T`` against ``target``, in closed form.

    ``x`` is one probe ``(dim,)`` with an int ``target``, or a batch ``(k, dim)`` with one target
    each: the batch shares a single pass over the matrix. The gradient of the loss with respect
    to ``x`` is ``softmax(x A^T) A - A[target]``; the softmax-weighted sum is accumulated over row
    blocks in one pass (online softmax, float64).
    """
    single = x.ndim == 1
    x64 = x.to(torch.float64).reshape(-1, x.shape[-1])
    targets = [target] if isinstance(target, int) else list(target)
    peak = torch.full((x64.shape[0], 1), -torch.inf, dtype=torch.float64)
    total = torch.zeros((x64.shape[0], 1), dtype=torch.float64)
    acc = torch.zeros_like(x64)
    target_rows = torch.full_like(x64, torch.nan)
    for start, block in row_blocks(matrix):
        logits = x64 @ block.T
        new_peak = torch.maximum(peak, logits.max(dim=1, keepdim=True).values)
        rescale = torch.exp(peak - new_peak)
        weights = torch.exp(logits - new_peak)
        total = total * rescale + weights.sum(dim=1, keepdim=True)
        acc = acc * rescale + weights @ block
        peak = new_peak
        for i, t in enumerate(targets):
            if start <= t < start + block.shape[0]:
                target_rows[i] = block[t - start]
    assert not target_rows.isnan().any(), "target outside the matrix"
    step = epsilon * torch.sign(acc / total - target_rows).to(torch.float32)
    return step[0] if single else step


def make_probe(kind: str, dim: int, fgsm_matrix: torch.Tensor | RowReader | None = None,
               seed: int = 0) -> Probe:
    """The probe of ``kind`` for an input dimension ``dim``.

    ``fgsm_matrix`` (shape ``(classes, dim)``, a tensor or a ``RowReader``) is required for
    ``adversarial``.
    """
    return make_probes(kind, dim, [seed], fgsm_matrix)[0]


def make_probes(kind: str, dim: int, seeds: list[int],
                fgsm_matrix: torch.Tensor | RowReader | None = None) -> list[Probe]:
    """``make_probe`` for each seed; adversarial probes share one pass over ``fgsm_matrix``."""
    if kind != "adversarial":
        return [_probe(kind, dim, seed) for seed in seeds]
    if fgsm_matrix is None:
        raise ValueError("an adversarial probe needs the matrix it attacks")
    bases, targets = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        bases.append(torch.randn(dim, generator=gen))
        targets.append(int(torch.randint(0, fgsm_matrix.shape[0], (1,), generator=gen)))
    deltas = fgsm_step(torch.stack(bases), fgsm_matrix, targets)
    return [Probe(kind, base + delta, base, delta) for base, delta in zip(bases, deltas)]


def _probe(kind: str, dim: int, seed: int) -> Probe:
    """A probe of every kind but ``adversarial`` (which needs a matrix: see ``make_probes``)."""
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
    if kind == "structured":
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
