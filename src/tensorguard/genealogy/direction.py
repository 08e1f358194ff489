"""Which end of a related pair is the parent, from the weights alone.

Each cue votes on a pair ``(a, b)`` with a number in [-1, 1], positive when ``a`` is the parent;
most vote per matrix, over the matrices both hold: the share of matrices where it points one way
minus the share where it points the other. The cues are data (``CUES``), tried in order; the
first whose vote reaches ``DECISIVE`` decides, else the pair's direction is not told (``score``
stays 0 and the edge is reported undirected). Artefacts come first, because a derivative gains
them and never loses them:

* ``precision``: fewer bits (values on a quantization grid, or exactly 16-bit floats) in the child;
* ``sparsity``: more exact zeros in the child (pruning);
* ``depth``: fewer matrices in the child (blocks removed; a model grown by stacking blocks would
  be read the wrong way round);
* ``vocabulary``: more rows in a matrix both name (an embedding or head extended with new tokens;
  a vocabulary cut down would be read the wrong way round);
* ``drift``: a larger root-mean-square weight in the child (an update adds energy that is
  independent of the weights; weight decay during long training can reverse it).

``KURTOSIS`` is the rule of MoTHer (Horwitz et al. 2024): training grows weight outliers, so the
parent has the lower kurtosis; the evaluation reports it beside ours and it is not a default cue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tensorguard.genealogy.candidates import shared
from tensorguard.genealogy.profiles import ModelProfile

#: A cue's vote from which it decides the direction.
DECISIVE = 0.3
#: Smallest difference in zero share that counts as pruning.
ZERO_MARGIN = 0.01


@dataclass(frozen=True)
class Cue:
    """One directional cue: ``vote(a, b)`` in [-1, 1], positive when ``a`` looks like the parent."""

    name: str
    description: str
    vote: Callable[[ModelProfile, ModelProfile], float]


def per_matrix(column: str, order: Callable[[np.ndarray, np.ndarray], np.ndarray],
               ) -> Callable[[ModelProfile, ModelProfile], float]:
    """A vote from a per-matrix ``order`` of one statistic (``column`` of ``Columns``; +1: the first
    matrix looks like the parent's, -1: the reverse, 0: cannot tell), averaged over the matrices
    both models hold (all of them at once)."""

    def vote(a: ModelProfile, b: ModelProfile) -> float:
        ca, cb = a.columns, b.columns
        left, right = getattr(ca, column), getattr(cb, column)
        if a.layout != b.layout:
            names = shared(a, b)
            if not names:
                return 0.0
            left, right = left[[ca.index[n] for n in names]], right[[cb.index[n] for n in names]]
        return float(np.mean(order(left, right))) if left.size else 0.0

    return vote


def _sign(x: float) -> int:
    return int(np.sign(x))


def _rows(a: ModelProfile, b: ModelProfile) -> float:
    """Over the matrices both name whose rows are of one width but not of one count: the mean of
    +1 (more rows in ``b``, the child) and -1 (more in ``a``); 0 where there are none."""
    if a.layout == b.layout:
        return 0.0
    votes = [_sign(b.matrices[n].shape[0] - m.shape[0]) for n, m in a.matrices.items()
             if n in b.matrices and len(m.shape) == 2 and b.matrices[n].shape[1:] == m.shape[1:]
             and b.matrices[n].shape[0] != m.shape[0]]
    return float(np.mean(votes)) if votes else 0.0


CUES = (
    Cue("precision", "the child's values are coarser (quantized or cast)",
        per_matrix("bits", lambda a, b: np.sign(a - b))),
    Cue("sparsity", "the child holds more exact zeros (pruned)",
        per_matrix("zeros", lambda a, b: np.where(np.abs(b - a) > ZERO_MARGIN, np.sign(b - a), 0.0))),
    Cue("depth", "the child has fewer matrices (blocks removed)",
        lambda a, b: float(_sign(len(a.matrices) - len(b.matrices)))),
    Cue("vocabulary", "the child has more rows in a matrix both name (new tokens)",
        _rows),
    Cue("drift", "the child's weights are larger (updates add energy)",
        per_matrix("rms", lambda a, b: np.sign(b - a))),
)
KURTOSIS = Cue("kurtosis", "the child's weights have heavier tails (MoTHer)",
               per_matrix("kurtosis", lambda a, b: np.sign(b - a)))


@dataclass(frozen=True)
class Direction:
    """The direction of a pair: ``score`` > 0 when the first model is the parent; ``cue`` decided
    (``None``: not told); ``votes`` of every cue."""

    score: float
    cue: str | None
    votes: dict[str, float]


def direction(a: ModelProfile, b: ModelProfile) -> Direction:
    """The first cue of ``CUES`` that is decisive on ``(a, b)``."""
    votes = {c.name: round(c.vote(a, b), 6) for c in CUES}
    for cue in CUES:
        if abs(votes[cue.name]) >= DECISIVE:
            return Direction(votes[cue.name], cue.name, votes)
    return Direction(0.0, None, votes)
