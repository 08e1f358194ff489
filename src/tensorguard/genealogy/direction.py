"""Which end of a related pair is the parent, from the weights alone.

Each cue votes on a pair ``(a, b)`` with a number in [-1, 1], positive when ``a`` is the parent,
over the matrices both hold: the share of matrices where it points one way minus the share where
it points the other. The cues are data (``CUES``), tried in order; the first whose vote reaches
``DECISIVE`` decides, else the pair's direction is not told (``score`` stays near 0 and the edge is
reported undirected). Artefacts come first, because a derivative gains them and never loses them:

* ``precision``: fewer bits (values on a quantization grid, or exactly 16-bit floats) in the child;
* ``sparsity``: more exact zeros in the child (pruning);
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
from tensorguard.genealogy.profiles import MatrixProfile, ModelProfile

#: A cue's vote from which it decides the direction.
DECISIVE = 0.3
#: Smallest difference in zero share that counts as pruning.
ZERO_MARGIN = 0.01


@dataclass(frozen=True)
class Cue:
    """One directional cue: ``order(a, b)`` is +1 when matrix ``a`` looks like the parent of ``b``,
    -1 for the reverse, 0 when it cannot tell."""

    name: str
    description: str
    order: Callable[[MatrixProfile, MatrixProfile], int]

    def vote(self, a: ModelProfile, b: ModelProfile) -> float:
        names = shared(a, b)
        if not names:
            return 0.0
        return float(np.mean([self.order(a.matrices[n], b.matrices[n]) for n in names]))


def _sign(x: float) -> int:
    return int(np.sign(x))


CUES = (
    Cue("precision", "the child's values are coarser (quantized or cast)",
        lambda a, b: _sign(a.bits - b.bits)),
    Cue("sparsity", "the child holds more exact zeros (pruned)",
        lambda a, b: _sign(b.zeros - a.zeros) if abs(b.zeros - a.zeros) > ZERO_MARGIN else 0),
    Cue("drift", "the child's weights are larger (updates add energy)", lambda a, b: _sign(b.rms - a.rms)),
)
KURTOSIS = Cue("kurtosis", "the child's weights have heavier tails (MoTHer)",
               lambda a, b: _sign(b.kurtosis - a.kurtosis))


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
