"""What a child is of its parent, read off the two profiles, in this order (the first that holds):

1. ``same weights``: every sampled entry equal;
2. ``quantized``: the child's values sit on a quantization grid the parent's do not;
3. ``cast``: the child's values are 16-bit floats and the parent's are not;
4. ``pruned``: the child holds more exact zeros, or fewer matrices (blocks removed);
5. ``rescaled``: each matrix is the parent's scaled per row and per column (``log |child / parent|``
   is a row term plus a column term, to within ``RESCALED``): the function-preserving rescaling
   of paired matrices, which changes no output;
6. ``adapter``: the difference is low rank in most matrices (a merged LoRA): its first quarter of
   singular values holds at least ``LOW_RANK`` of its energy;
7. ``fine-tuned``: anything else.

A merge's parents are found by ``candidates.find_merges`` and labelled ``merge parent``.
"""

from __future__ import annotations

import numpy as np

from tensorguard.genealogy.candidates import shared
from tensorguard.genealogy.direction import ZERO_MARGIN
from tensorguard.genealogy.profiles import ModelProfile
from tensorguard.genealogy.results import EdgeKind

#: Largest spread (standard deviation) of ``log |child / parent|`` left after its row and column
#: terms for a matrix to count as rescaled.
RESCALED = 1e-3
#: Energy share of the first quarter of singular values from which a difference is low rank.
LOW_RANK = 0.9
#: Largest energy share beyond the first quarter of singular values that float rounding leaves in
#: a difference of exactly low rank (float32 rounding is about 1e-7 per entry, so 1e-14 in energy).
EXACT = 1e-8


def _tails(parent: ModelProfile, child: ModelProfile, *, stop_after_misses: bool = False) -> list[float]:
    """Per shared matrix whose sketch changed: the share of the difference's energy beyond its
    first quarter of singular values (``stop_after_misses``: stop once half of the shared matrices
    are not exactly low rank, which settles ``exactly_low_rank``)."""
    tails: list[float] = []
    names = shared(parent, child)
    for name in names:
        if stop_after_misses and 2 * sum(t > EXACT for t in tails) >= len(names):
            break
        delta = child.matrices[name].sketch - parent.matrices[name].sketch
        if min(delta.shape) < 8 or not delta.any():
            continue
        energy = np.linalg.svd(delta, compute_uv=False) ** 2
        tails.append(float(energy[min(delta.shape) // 4:].sum() / energy.sum()))
    return tails


def low_rank_share(parent: ModelProfile, child: ModelProfile) -> float:
    """Share of shared matrices whose difference (on the sketch) is low rank."""
    tails = _tails(parent, child)
    return float(np.mean([t <= 1 - LOW_RANK for t in tails])) if tails else 0.0


def exactly_low_rank(a: ModelProfile, b: ModelProfile) -> bool:
    """Whether the difference of ``a`` and ``b`` is low rank to within float rounding in most of
    the matrices that differ: a merged adapter made from exactly that model (symmetric in a, b)."""
    tails = _tails(a, b, stop_after_misses=True)
    return bool(tails) and float(np.mean([t <= EXACT for t in tails])) > 0.5


def rescaled_share(parent: ModelProfile, child: ModelProfile) -> float:
    """Share of the changed shared matrices that are the parent's scaled per row and column."""
    votes = []
    for name in shared(parent, child):
        p, c = parent.matrices[name].sketch, child.matrices[name].sketch
        if np.array_equal(p, c):
            continue
        nonzero = p != 0
        if ((c == 0) != ~nonzero).any():
            votes.append(False)
            continue
        ratio = np.log(np.abs(np.where(nonzero, c, 1.0) / np.where(nonzero, p, 1.0)))
        centred = ratio - ratio.mean(axis=1, keepdims=True) - ratio.mean(axis=0, keepdims=True) + ratio.mean()
        votes.append(float(centred[nonzero].std()) <= RESCALED)
    return float(np.mean(votes)) if votes else 0.0


def _identical(parent: ModelProfile, child: ModelProfile) -> bool:
    names = shared(parent, child)
    return len(names) == len(parent.matrices) == len(child.matrices) and all(
        np.array_equal(parent.matrices[n].sketch, child.matrices[n].sketch) for n in names)


def edge_kind(parent: ModelProfile, child: ModelProfile) -> tuple[EdgeKind, str]:
    """The kind of the edge ``parent`` -> ``child`` and the evidence, in words."""
    if _identical(parent, child):
        return EdgeKind.SAME, "every sampled weight is equal"
    if child.grid and child.grid != parent.grid and child.bits < parent.bits:
        return EdgeKind.QUANTIZED, f"the child's values sit on a {child.grid} grid"
    if child.bits == 16 and parent.bits > 16:
        return EdgeKind.CAST, "the child's values are 16-bit floats"
    if child.zeros > parent.zeros + ZERO_MARGIN:
        return EdgeKind.PRUNED, f"zeros {parent.zeros:.0%} -> {child.zeros:.0%}"
    if len(child.matrices) < len(parent.matrices):
        return EdgeKind.PRUNED, f"{len(parent.matrices) - len(child.matrices)} matrices fewer"
    if rescaled_share(parent, child) > 0.5:
        return EdgeKind.RESCALED, "each matrix rescaled per row and column (the same function)"
    share = low_rank_share(parent, child)
    if share > 0.5:
        return EdgeKind.ADAPTER, f"the difference is low rank in {share:.0%} of the matrices"
    return EdgeKind.FINETUNED, "a full-rank difference with no storage artefact"
