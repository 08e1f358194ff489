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


#: How far (in energy share) the estimate of a tail from the Gram matrix's eigenvalues must sit
#: from a threshold to settle it without the singular values: forming and solving the Gram matrix
#: of a sketch (about 4,096 entries) rounds that share by at most about 3e-11.
SETTLED = 1e-9
#: A tail share above every threshold by more than ``SETTLED``.
_ABOVE_ALL = max(EXACT, 1 - LOW_RANK) + 2 * SETTLED


def _exact_tail(delta: np.ndarray) -> float:
    """The share of ``delta``'s energy beyond its first quarter of singular values."""
    energy = np.linalg.svd(delta, compute_uv=False) ** 2
    return float(energy[min(delta.shape) // 4:].sum() / energy.sum())


def _tails(parent: ModelProfile, child: ModelProfile,
           names: list[str] | None = None) -> list[tuple[float, np.ndarray]]:
    """Per shared matrix (of ``names``, default all) whose sketch changed and has at least 8 rows
    and columns, in order: the
    share of the difference's energy beyond its first quarter of singular values, estimated from
    the eigenvalues of its Gram matrix (the Gram matrices of one size bounded and solved in one
    batch, where a singular value decomposition per matrix costs more than reading it), or a lower
    bound of it where that passes every threshold; and the difference."""
    deltas: list[np.ndarray] = []
    grams: dict[int, list[int]] = {}
    products: list[np.ndarray] = []
    for name in shared(parent, child) if names is None else names:
        before, after = parent.matrices[name].sketch, child.matrices[name].sketch
        if min(before.shape) < 8:
            continue
        delta = after - before
        if not delta.any():
            continue
        grams.setdefault(min(delta.shape), []).append(len(deltas))
        deltas.append(delta)
        products.append(delta @ delta.T if delta.shape[0] <= delta.shape[1] else delta.T @ delta)
    tails = [0.0] * len(deltas)
    for rank, idx in grams.items():
        gram = np.stack([products[i] for i in idx])
        # the first quarter holds at most a quarter of the rows' largest energy, which is at most
        # the largest absolute row sum (Gershgorin): where the rest already passes every
        # threshold, that bound settles it; the eigenvalues of the others give the share
        total = np.trace(gram, axis1=1, axis2=2)
        beyond = 1 - (rank // 4) * np.abs(gram).sum(axis=2).max(axis=1) / total
        unsure = np.flatnonzero(beyond <= _ABOVE_ALL)
        if unsure.size:
            eig = np.linalg.eigvalsh(gram[unsure])  # ascending: the energies of the singular values
            beyond[unsure] = eig[:, : rank - rank // 4].sum(axis=1) / eig.sum(axis=1)
        for i, t in zip(idx, beyond.tolist(), strict=True):
            tails[i] = t
    return list(zip(tails, deltas, strict=True))


def _within(tail: float, delta: np.ndarray, threshold: float) -> bool:
    """Whether the tail is at most ``threshold``: the estimate where it settles that, else exact."""
    if abs(tail - threshold) > SETTLED:
        return tail <= threshold
    return _exact_tail(delta) <= threshold


def _low_rank_votes(a: ModelProfile, b: ModelProfile, threshold: float) -> tuple[int, int]:
    """Of the shared matrices whose difference has a tail (``_tails``), how many have one within
    ``threshold`` and how many beyond it. The matrices are taken in order, as few at a time as
    could settle whether most are within: once half of the shared matrices are beyond, the rest
    cannot change that, and the counting stops (symmetric in a, b)."""
    names = shared(a, b)
    within = beyond = start = 0
    while start < len(names) and 2 * beyond < len(names):
        count = -(-len(names) // 2) - beyond  # the misses that would settle it
        for t, d in _tails(a, b, names[start:start + count]):
            if 2 * beyond >= len(names):
                break
            if _within(t, d, threshold):
                within += 1
            else:
                beyond += 1
        start += count
    return within, beyond


def low_rank_share(parent: ModelProfile, child: ModelProfile) -> float:
    """Share of shared matrices whose difference (on the sketch) is low rank, where most are; at
    most 0.5 otherwise (the count stops once that is settled)."""
    within, beyond = _low_rank_votes(parent, child, 1 - LOW_RANK)
    return within / (within + beyond) if within + beyond else 0.0


def exactly_low_rank(a: ModelProfile, b: ModelProfile) -> bool:
    """Whether the difference of ``a`` and ``b`` is low rank to within float rounding in most of
    the matrices that differ: a merged adapter made from exactly that model (symmetric in a, b)."""
    within, beyond = _low_rank_votes(a, b, EXACT)
    return within > beyond


def _spread_floor(p: np.ndarray, c: np.ndarray) -> float:
    """A lower bound, from the first two rows alone, of the spread that ``rescaled`` measures on
    all of ``p`` and ``c`` (0 where they cannot bound it). Over any two rows and two columns the
    row and column terms cancel: ``L[i,j] - L[i,j'] - L[i',j] + L[i',j']`` (``L = log |c / p|``)
    is the same sum of the four centred values, so its square is at most 4 times their summed
    squared deviations; over disjoint column pairs of rows 0 and 1 those sums add up to at most
    ``4 N std^2`` (``N`` entries, at most ``p.size``)."""
    if p.shape[0] < 2:
        return 0.0
    top, under = p[:2], c[:2]
    both = (top != 0) & (under != 0)
    diff = np.log(np.abs(np.where(both, under, 1.0) / np.where(both, top, 1.0)))
    across = diff[0] - diff[1]
    width = across.size // 2 * 2
    usable = both[0] & both[1]
    dd = np.where(usable[0:width:2] & usable[1:width:2], across[0:width:2] - across[1:width:2], 0.0)
    return float(np.sqrt(np.dot(dd, dd) / (4 * p.size)))


def rescaled(parent: ModelProfile, child: ModelProfile) -> bool:
    """Whether most of the changed shared matrices are the parent's scaled per row and column
    (a matrix whose first two rows already bound its spread above ``RESCALED`` is not: most
    fine-tuned matrices are settled so, without the logarithms of all their entries)."""
    names = shared(parent, child)
    yes = no = 0
    for i, name in enumerate(names):
        if no >= yes + len(names) - i:  # the rest cannot make a majority
            break
        p, c = parent.matrices[name].sketch, child.matrices[name].sketch
        if np.array_equal(p, c):
            continue
        if _spread_floor(p, c) > 2 * RESCALED:  # twice: far beyond float rounding
            no += 1
            continue
        nonzero = p != 0
        if ((c == 0) != ~nonzero).any():
            no += 1
            continue
        ratio = np.log(np.abs(np.where(nonzero, c, 1.0) / np.where(nonzero, p, 1.0)))
        centred = ratio - ratio.mean(axis=1, keepdims=True) - ratio.mean(axis=0, keepdims=True) + ratio.mean()
        if float(centred[nonzero].std()) <= RESCALED:
            yes += 1
        else:
            no += 1
    return yes > no


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
    if rescaled(parent, child):
        return EdgeKind.RESCALED, "each matrix rescaled per row and column (the same function)"
    share = low_rank_share(parent, child)
    if share > 0.5:
        return EdgeKind.ADAPTER, f"the difference is low rank in {share:.0%} of the matrices"
    return EdgeKind.FINETUNED, "a full-rank difference with no storage artefact"
