"""The adversarial probe: one FGSM step in closed form, streamed over the attacked matrix.

The gradient of the cross-entropy of ``x A^T`` against a target class, with respect to ``x``, is
``softmax(x A^T) A - A[target]``; the softmax-weighted sum is accumulated over row blocks in one
pass (online softmax, float64), so attacking a 128256 x 2048 embedding never needs it whole, and
one pass serves a whole batch of probes. The FGSM gradient is computed in float64 and only the
step is rounded to float32, so it does not change with the BLAS build.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tensorguard.loading import ModelSource
from tensorguard.loading.source import BLOCK_ELEMENTS
from tensorguard.probes.pool import pool

FGSM_EPSILON = 0.03


@dataclass(frozen=True)
class MatrixRows:
    """A 2-D tensor of a model, streamed as float32 row blocks by ``ModelSource.row_blocks``."""

    source: ModelSource
    name: str
    max_elements: int = BLOCK_ELEMENTS

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.info(self.name).shape

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        return self.source.row_blocks(self.name, max_elements=self.max_elements, dtype=torch.float32)


def float64_blocks(blocks: Iterator[tuple[int, torch.Tensor]],
                   device: str | torch.device = "cpu") -> Iterator[tuple[int, torch.Tensor]]:
    """The same blocks as float64 on ``device``, each a view of one reused buffer (fresh
    allocations cost more than the arithmetic): use a block before taking the next one."""
    buffer: torch.Tensor | None = None
    for start, block in blocks:
        if buffer is None or buffer.shape[0] < block.shape[0]:
            buffer = torch.empty(tuple(block.shape), dtype=torch.float64, device=device)
        out = buffer[:block.shape[0]]
        out.copy_(block)
        yield start, out


def _blocks(matrix: torch.Tensor | MatrixRows) -> Iterator[tuple[int, torch.Tensor]]:
    if isinstance(matrix, MatrixRows):
        return float64_blocks(matrix.blocks())
    return iter([(0, matrix.to(torch.float32).to(torch.float64))])  # already in memory: one block


def fgsm_step(x: torch.Tensor, matrix: torch.Tensor | MatrixRows, target: int | list[int],
              epsilon: float = FGSM_EPSILON) -> torch.Tensor:
    """One FGSM step on cross-entropy of ``x @ matrix.T`` against ``target``, in closed form.

    ``x`` is one probe ``(dim,)`` with an int ``target``, or a batch ``(k, dim)`` with one target
    each: the batch shares a single pass over the matrix.
    """
    single = x.ndim == 1
    x64 = x.to(torch.float64).reshape(-1, x.shape[-1])
    targets = [target] if isinstance(target, int) else list(target)
    if not all(0 <= t < matrix.shape[0] for t in targets):
        raise ValueError("an FGSM target lies outside the attacked matrix")
    peak = torch.full((x64.shape[0], 1), -torch.inf, dtype=torch.float64)
    total = torch.zeros((x64.shape[0], 1), dtype=torch.float64)
    acc = torch.zeros_like(x64)
    target_rows = torch.zeros_like(x64)
    for start, block in _blocks(matrix):
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
    step = epsilon * torch.sign(acc / total - target_rows).to(torch.float32)
    return step[0] if single else step


def fgsm_matrix(source: ModelSource, dim: int) -> MatrixRows:
    """The matrix the adversarial probe of width ``dim`` attacks: the first pool tensor that fits
    (the paper's rule)."""
    info = next(i for i in pool(source) if i.shape[1] == dim)
    return MatrixRows(source, info.name)
