"""What a child is of its parent, read off the two profiles, in this order (the first that holds):

1. ``same weights``: every sampled entry equal;
2. ``quantized``: the child's values sit on a quantization grid the parent's do not;
3. ``cast``: the child's values are 16-bit floats and the parent's are not;
4. ``pruned``: the child holds more exact zeros;
5. ``adapter``: the difference is low rank in most matrices (a merged LoRA): its first quarter of
   singular values holds at least ``LOW_RANK`` of its energy;
6. ``fine-tuned``: anything else.

A merge's parents are found by ``candidates.find_merges`` and labelled ``merge parent``.
"""

from __future__ import annotations

import numpy as np

from tensorguard.genealogy.candidates import shared
from tensorguard.genealogy.direction import ZERO_MARGIN
from tensorguard.genealogy.profiles import ModelProfile
from tensorguard.genealogy.results import EdgeKind

#: Energy share of the first quarter of singular values from which a difference is low rank.
LOW_RANK = 0.9


def low_rank_share(parent: ModelProfile, child: ModelProfile) -> float:
    """Share of shared matrices whose difference (on the sketch) is low rank."""
    votes = []
    for name in shared(parent, child):
        delta = child.matrices[name].sketch - parent.matrices[name].sketch
        if min(delta.shape) < 8 or not delta.any():
            continue
        energy = np.linalg.svd(delta, compute_uv=False) ** 2
        votes.append(energy[: min(delta.shape) // 4].sum() >= LOW_RANK * energy.sum())
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
    share = low_rank_share(parent, child)
    if share > 0.5:
        return EdgeKind.ADAPTER, f"the difference is low rank in {share:.0%} of the matrices"
    return EdgeKind.FINETUNED, "a full-rank difference with no storage artefact"
