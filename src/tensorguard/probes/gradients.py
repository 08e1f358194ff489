"""Gradient response statistics of one weight matrix to probe inputs: exact closed form and autograd.

The paper probes a weight ``W`` (out x in) with an input ``x`` and takes the gradient of
``L = ||W x||_2`` with respect to ``W``: ``G = u x^T`` with ``u = y / ||y||`` and ``y = W x``. Every
entry is a product ``u_i x_j``, so the raw moments of ``G`` factor,
``E[g^k] = mean(u^k) mean(x^k)``, and its mean, population standard deviation, Frobenius norm
(``||x||`` whenever ``y != 0``), biased skewness and excess kurtosis follow exactly from the first
four moments of ``u`` and ``x``: no out x in matrix is ever formed and nothing is subsampled.

Reproducibility: ``y`` is computed in float64 from the float32 weights (bf16/f16/f32 times a float32
probe is exact in float64, only the sums round), streamed in row blocks on the chosen device, and
every statistic is derived in float64. Differences between BLAS builds or devices then stay near
1e-16 relative; ``tensorguard.fingerprints`` rounds what it stores to 10 significant digits, so
they cannot reach the written bytes.

``autograd_statistics`` is the slow reference of the same maths (the full gradient matrix from
autograd, then numpy/scipy statistics), used by the tests and the benchmark baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tensorguard.loading import ModelSource
from tensorguard.loading.source import BLOCK_ELEMENTS
from tensorguard.probes.fgsm import float64_blocks

_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class GradientStats:
    """Statistics of the entries of one gradient matrix (scipy's biased definitions)."""

    mean: float
    std: float
    norm: float
    skewness: float
    kurtosis: float


def responses(source: ModelSource, name: str, *, probes: torch.Tensor,
              device: str | torch.device = "cpu", max_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """``W @ probes`` in float64 on the CPU, for the 2-D tensor ``name`` (out x in) and probes (in x k).

    ``W`` is streamed in row blocks (``ModelSource.row_blocks``), as float32 values in float64
    on ``device``.
    """
    x = probes.to(device=device, dtype=torch.float64)
    out = torch.empty((source.info(name).shape[0], probes.shape[1]), dtype=torch.float64)
    blocks = source.row_blocks(name, max_elements=max_elements, dtype=torch.float32)
    for start, block in float64_blocks(blocks, device):
        out[start:start + block.shape[0]] = (block @ x).cpu()
    return out


def _raw_moments(v: torch.Tensor) -> list[torch.Tensor]:
    """Column-wise ``mean(v^k)`` for k = 1..4 of a float64 (n x k) tensor."""
    return [torch.mean(v**k, dim=0) for k in range(1, 5)]


def _from_raw(e1: float, e2: float, e3: float, e4: float, *, count: int) -> GradientStats:
    """Statistics of ``count`` values with raw moments ``e1..e4`` (central moments expanded)."""
    var = max(e2 - e1 * e1, 0.0)
    std = var**0.5
    norm = (count * e2) ** 0.5
    if var <= (16 * _EPS * e1) ** 2 or var == 0.0:  # constant entries: no shape to measure
        return GradientStats(e1, 0.0, norm, 0.0, 0.0)
    m3 = e3 - 3 * e1 * e2 + 2 * e1**3
    m4 = e4 - 4 * e1 * e3 + 6 * e1 * e1 * e2 - 3 * e1**4
    return GradientStats(e1, std, norm, m3 / var**1.5, m4 / (var * var) - 3.0)


def closed_form_statistics(y: torch.Tensor, probes: torch.Tensor) -> list[GradientStats]:
    """Exact gradient statistics for each column: ``y = W @ probes`` (out x k), probes (in x k).

    A zero response (``y = 0``) has a zero gradient, as autograd gives for the norm at zero.
    """
    y = y.to(torch.float64)
    x = probes.to(y.device, torch.float64)
    length = torch.linalg.vector_norm(y, dim=0)
    u = y / torch.where(length > 0, length, torch.ones_like(length))
    a, b = _raw_moments(u), _raw_moments(x)
    count = y.shape[0] * x.shape[0]
    return [_from_raw(*[float(a[k][j]) * float(b[k][j]) for k in range(4)], count=count)
            for j in range(y.shape[1])]


def gradient_matrix(weight: torch.Tensor, x: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The gradient of ``||x W^T||_2`` with respect to ``W`` (cast to ``dtype``), from autograd."""
    w = weight.detach().to(dtype).requires_grad_(True)
    torch.linalg.vector_norm(x.to(dtype).reshape(1, -1) @ w.T).backward()
    if w.grad is None:  # cannot happen: w is a leaf that requires grad
        raise RuntimeError("autograd produced no gradient")
    return w.grad


def autograd_statistics(weight: torch.Tensor, x: torch.Tensor, dtype: torch.dtype = torch.float32,
                        subsample: int | None = None) -> GradientStats:
    """Reference: full gradient by autograd (``dtype`` weights), then numpy/scipy statistics of it.

    ``subsample``: like the paper's code, estimate skewness and kurtosis from that many entries
    drawn with ``numpy.random.seed(0)`` when the gradient has more than twice as many.
    """
    from scipy import stats

    g = gradient_matrix(weight, x, dtype).numpy().ravel()
    mean, std = float(np.mean(g)), float(np.std(g))
    norm = float(np.linalg.norm(g))
    if std <= 16 * _EPS * abs(mean) or std == 0.0:
        return GradientStats(mean, 0.0, norm, 0.0, 0.0)
    shape = g
    if subsample is not None and g.size > 2 * subsample:
        shape = g[np.random.RandomState(0).choice(g.size, subsample, replace=False)]
    return GradientStats(mean, std, norm, float(stats.skew(shape)), float(stats.kurtosis(shape)))
