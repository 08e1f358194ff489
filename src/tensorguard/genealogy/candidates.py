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
    return [n for n, m in a.matrices.items() if n in b.matrices and b.matrices[n].shape == m.shape]


def similarity_matrix(profiles: Sequence[ModelProfile]) -> np.ndarray:
    """Median sketch cosine of every pair (NaN where two models share no matrix; 1 on the diagonal)."""
    n = len(profiles)
    keys = sorted({(name, m.shape) for p in profiles for name, m in p.matrices.items()})
    per_matrix = []
    for name, shape in keys:
        idx = [i for i, p in enumerate(profiles)
               if name in p.matrices and p.matrices[name].shape == shape]
        if len(idx) < 2:
            continue
        x = np.stack([profiles[i].matrices[name].sketch.reshape(-1) for i in idx])
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        full = np.full((n, n), np.nan)
        full[np.ix_(idx, idx)] = x @ x.T
        per_matrix.append(full)
    if not per_matrix:
        return np.where(np.eye(n, dtype=bool), 1.0, np.nan)
    with warnings.catch_warnings():  # pairs with no shared matrix stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        sim = np.nanmedian(np.stack(per_matrix), axis=0)
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


def _stack(profiles: Sequence[ModelProfile], names: list[str]) -> list[np.ndarray]:
    return [np.concatenate([p.matrices[n].sketch.reshape(-1) for n in names]) for p in profiles]


def fit_merge(profiles: Sequence[ModelProfile], child: int, p: int, q: int) -> MergeFit | None:
    """How well ``child`` sits on the segment between ``p`` and ``q`` (``None``: nothing to fit)."""
    names = [n for n in shared(profiles[child], profiles[p]) if n in shared(profiles[child], profiles[q])]
    if not names:
        return None
    x, a, b = _stack([profiles[child], profiles[p], profiles[q]], names)
    span = a - b
    denominator = float(span @ span)
    nearest = min(float(np.linalg.norm(x - a)), float(np.linalg.norm(x - b)))
    if denominator == 0 or nearest == 0:
        return None
    weight = float((x - b) @ span) / denominator
    residual = float(np.linalg.norm(x - b - weight * span)) / nearest
    return MergeFit(child, (p, q), weight, residual, nearest)


def find_merges(profiles: Sequence[ModelProfile], sim: np.ndarray) -> dict[int, MergeFit]:
    """The models that are merges of two others, each with its best-fitting parents."""
    fits: dict[int, MergeFit] = {}
    for child in range(len(profiles)):
        related = [j for j in np.argsort(-np.nan_to_num(sim[child], nan=-2.0), kind="stable")
                   if j != child and sim[child, j] >= RELATED][:NEIGHBOURS]
        best: MergeFit | None = None
        for p, q in itertools.combinations(sorted(int(j) for j in related), 2):
            fit = fit_merge(profiles, child, p, q)
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
