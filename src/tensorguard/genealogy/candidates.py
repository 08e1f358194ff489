"""Which models are related, and which is a merge of two others, from the sketches alone.

Similarity of two models is the median cosine of their same-name, same-shape matrices' sketches
(one Gram matrix per matrix name over every model holding it: no pair is read from disk). Two
models are related when it reaches ``RELATED``: independent models sit near 0 (about
``1/sqrt(SKETCH)`` of noise), derivatives far above.

A merge ``X`` of parents ``P`` and ``Q`` is the point ``Q + a (P - Q)`` of the line through them:
``X`` is a merge when, among its closest related models, a pair fits it with ``a`` inside
``MERGE_WEIGHTS`` and a residual below ``MERGE_RESIDUAL`` times its distance to the nearer parent.
A parent's own child or a parent of both never fits so (its residual is the other's own change).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tensorguard.genealogy.profiles import ModelProfile

#: Median sketch cosine from which two models count as related.
RELATED = 0.25
#: Closest related models among which a merge's parents are looked for.
NEIGHBOURS = 6
#: The share of the first parent in a merge: strictly inside, so a copy of one parent is no merge.
MERGE_WEIGHTS = (0.1, 0.9)
#: Largest residual of a merge fit, relative to the distance to the nearer parent.
MERGE_RESIDUAL = 0.25


def shared(a: ModelProfile, b: ModelProfile) -> list[str]:
    """The matrices both hold with the same shape (``a``'s order)."""
    if a.layout == b.layout:
        return list(a.matrices)
    return [n for n, m in a.matrices.items() if n in b.matrices and b.matrices[n].shape == m.shape]


@dataclass(frozen=True)
class Products:
    """Dot products of the models' sketches, one matrix name at a time: ``dots[m, i, j]`` over the
    ``m``-th (name, shape), held by the models where ``present[m]`` (float64: about ``M n^2 8``
    bytes, 72 MB for 200 models of 226 matrices). Every pairwise and three-way measure below
    is a sum of these; no sketch is read twice."""

    dots: np.ndarray
    present: np.ndarray

    def gram(self, models: Sequence[int]) -> np.ndarray:
        """The Gram matrix of ``models`` over the matrices all of them hold."""
        idx = np.asarray(models, dtype=np.intp)
        keep = np.flatnonzero(self.present[:, idx].all(axis=1))
        return np.asarray(self.dots[np.ix_(keep, idx, idx)].sum(axis=0), dtype=float)


def products(profiles: Sequence[ModelProfile]) -> Products:
    """Every pair's sketch dot products, per matrix (one matrix product per matrix name)."""
    n = len(profiles)
    keys = sorted({(name, m.shape) for p in profiles for name, m in p.matrices.items()})
    dots, present = [], []
    for name, shape in keys:
        idx = [i for i, p in enumerate(profiles)
               if name in p.matrices and p.matrices[name].shape == shape]
        if len(idx) < 2:
            continue
        x = torch.from_numpy(np.stack([profiles[i].matrices[name].sketch.reshape(-1) for i in idx]))
        full = np.zeros((n, n))
        full[np.ix_(idx, idx)] = (x @ x.T).numpy()  # torch's product: float64, as numpy's
        dots.append(full)
        present.append(np.isin(np.arange(n), idx))
    if not dots:
        return Products(np.zeros((0, n, n)), np.zeros((0, n), dtype=bool))
    return Products(np.stack(dots), np.stack(present))


def similarity_matrix(found: Products) -> np.ndarray:
    """Median sketch cosine of every pair (NaN where two models share no matrix; 1 on the diagonal)."""
    n = found.dots.shape[1]
    norms = np.sqrt(np.einsum("mii->mi", found.dots))
    scale = norms[:, :, None] * norms[:, None, :]
    pair = found.present[:, :, None] & found.present[:, None, :] & (scale > 0)
    cos = np.where(pair, found.dots / np.where(scale > 0, scale, 1.0), np.nan)
    with warnings.catch_warnings():  # pairs with no shared matrix stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        sim = np.nanmedian(cos, axis=0) if len(cos) else np.full((n, n), np.nan)
    np.fill_diagonal(sim, 1.0)
    return np.asarray(np.clip(sim, -1.0, 1.0), dtype=float)


@dataclass(frozen=True)
class MergeFit:
    """``child`` = ``weight`` * first parent + (1 - ``weight``) * second, up to ``residual``
    (relative to the distance to the nearer parent)."""

    child: int
    parents: tuple[int, int]
    weight: float
    residual: float
    nearest: float  # distance (sketch norm of the difference) to the nearer parent


def fit_merge(found: Products, child: int, p: int, q: int) -> MergeFit | None:
    """How well ``child`` sits on the segment between ``p`` and ``q`` (``None``: nothing to fit),
    from the three models' Gram matrix over the matrices all three hold."""
    g = found.gram([child, p, q])
    span = g[1, 1] + g[2, 2] - 2 * g[1, 2]  # |p - q|^2
    to_p, to_q = g[0, 0] + g[1, 1] - 2 * g[0, 1], g[0, 0] + g[2, 2] - 2 * g[0, 2]
    nearest = float(np.sqrt(max(0.0, min(to_p, to_q))))
    if span <= 0 or nearest == 0:
        return None
    weight = float((g[0, 1] - g[0, 2] - g[1, 2] + g[2, 2]) / span)  # (x - q).(p - q) / |p - q|^2
    residual = float(np.sqrt(max(0.0, to_q - weight ** 2 * span))) / nearest
    return MergeFit(child, (p, q), weight, residual, nearest)


def find_merges(found: Products, sim: np.ndarray) -> dict[int, MergeFit]:
    """The models that are merges of two others, each with its best-fitting parents."""
    fits: dict[int, MergeFit] = {}
    for child in range(len(sim)):
        related = [j for j in np.argsort(-np.nan_to_num(sim[child], nan=-2.0), kind="stable")
                   if j != child and sim[child, j] >= RELATED][:NEIGHBOURS]
        best: MergeFit | None = None
        for p, q in itertools.combinations(sorted(int(j) for j in related), 2):
            fit = fit_merge(found, child, p, q)
            if (fit is not None and MERGE_WEIGHTS[0] < fit.weight < MERGE_WEIGHTS[1]
                    and fit.residual < MERGE_RESIDUAL and (best is None or fit.residual < best.residual)):
                best = fit
        if best is not None:
            fits[child] = best
    # a near copy of a merge (its quantized copy, say) fits the same parents a little worse: of
    # fits closer to each other than to their parents, the best is the merge
    return {c: f for c, f in fits.items()
            if not any(o != c and set(g.parents) == set(f.parents) and g.residual < f.residual
                       and 1 - sim[c, o] < 1 - sim[c, f.parents[0]] for o, g in fits.items())}
