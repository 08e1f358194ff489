"""How ``FamilyClassifier.predict`` names the base model of a fingerprint: the rules, as a registry.

Every rule reads the fitted known set (``KnownSet``) and the distances of one standardised
fingerprint to its models and centroids, and answers with the base model that known models carry
(never a cluster name), the distance its ``unknown`` test compares with the threshold, and a
confidence where it has one. Each rule also derives its own default threshold from the known set.

- ``neighbors`` (the default): a distance-weighted vote of the ``n_neighbors`` nearest known
  models; ``unknown`` when the nearest model of the winning base is an outlier among the distances
  at which known models, each held out and standardised by the rest, find a model of their own
  base: beyond Tukey's far-out fence of those distances, Q3 + 3 x (Q3 - Q1). (Their largest value
  would let a single odd known model set the threshold.)
- ``paper``: the paper's rule, the nearest center model; ``unknown`` beyond 7.
- ``centroid``: the nearest K-Means centroid; its cluster
  answers with its center nearest to the fingerprint (with its nearest member when it holds no
  center); ``unknown`` beyond 1.25 x the largest member-to-centroid distance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tensorguard.clustering.kmeans import distances, standardise
from tensorguard.enums import TextEnum

#: The paper's fixed unknown-model distance (``most_similar_distance > 7``).
PAPER_THRESHOLD = 7.0
#: Tukey's "far out" fence: Q3 + FENCE x (Q3 - Q1), the neighbors rule's threshold.
FENCE = 3.0
#: The centroid rule's threshold = THRESHOLD_MARGIN x the largest member-to-centroid distance.
THRESHOLD_MARGIN = 1.25


class Rule(TextEnum):
    """How ``predict`` names the base model of a fingerprint."""

    NEIGHBORS = "neighbors"  # distance-weighted vote of the nearest known models
    PAPER = "paper"  # the nearest center model, unknown beyond 7
    CENTROID = "centroid"  # the nearest K-Means centroid


@dataclass(frozen=True)
class KnownSet:
    """The fitted known models as arrays, one row each: what every rule reads."""

    features: np.ndarray  # the 14 features as read
    vectors: np.ndarray  # the same, standardised over the known set
    bases: tuple[str, ...]
    is_center: np.ndarray  # bool
    cluster: np.ndarray  # index into centroids
    centroids: np.ndarray
    n_neighbors: int


@dataclass(frozen=True)
class Choice:
    """A rule's answer for one fingerprint, before the unknown test."""

    base: str
    distance: float  # what the threshold is compared with
    confidence: float | None = None


@dataclass(frozen=True)
class RuleSpec:
    """One prediction rule: how it answers and how its default threshold is derived."""

    rule: Rule
    answer: str  # what the rule answers with, for reports ({k}: n_neighbors)
    distance: str  # what its distance measures, for reports
    threshold_rule: str  # how its default threshold is derived, for reports
    needs: str  # when the known set gives no default threshold, why
    choose: Callable[[KnownSet, np.ndarray, np.ndarray], Choice]  # (known, to models, to centroids)
    calibrate: Callable[[KnownSet], float]  # the default threshold (0: none)


RULES: dict[Rule, RuleSpec] = {}


def register(spec: RuleSpec) -> RuleSpec:
    RULES[spec.rule] = spec
    return spec


# ---- neighbors ----------------------------------------------------------------------------------

def vote_weights(d: np.ndarray) -> np.ndarray:
    """Inverse-distance weights; models at distance 0 share all the weight (the limit of 1/d)."""
    zero = d == 0
    return zero.astype(np.float64) if zero.any() else 1.0 / d


def _neighbors(known: KnownSet, to_models: np.ndarray, to_centroids: np.ndarray) -> Choice:
    nearest = np.argsort(to_models, kind="stable")[:known.n_neighbors]
    votes: dict[str, float] = {}
    for i, w in zip(nearest, vote_weights(to_models[nearest]), strict=True):
        votes[known.bases[i]] = votes.get(known.bases[i], 0.0) + float(w)
    base = max(votes, key=lambda b: votes[b])  # a tie goes to the base of the nearer model
    own = [i for i, b in enumerate(known.bases) if b == base]
    return Choice(base, float(to_models[own].min()), votes[base] / sum(votes.values()))


def held_out_sibling_distances(features: np.ndarray, bases: Sequence[str]) -> np.ndarray:
    """For each known model whose base another known model carries: its distance to the nearest
    of them when it is held out, i.e. standardised over the other models as a new one would be."""
    out = []
    for i, base in enumerate(bases):
        rest = np.array([j for j in range(len(bases)) if j != i], dtype=int)
        siblings = [j for j in rest if bases[j] == base]
        if siblings:
            mean, scale = standardise(features[rest])
            out.append(distances((features[[i]] - mean) / scale, (features[siblings] - mean) / scale).min())
    return np.array(out, dtype=np.float64)


def far_out_fence(values: np.ndarray) -> float:
    """Tukey's fence above which a value is "far out": Q3 + 3 x (Q3 - Q1) (0 for no values)."""
    if not values.size:
        return 0.0
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return float(q3 + FENCE * (q3 - q1))


def _neighbors_threshold(known: KnownSet) -> float:
    return far_out_fence(held_out_sibling_distances(known.features, known.bases))


register(RuleSpec(
    Rule.NEIGHBORS, "the distance-weighted vote of the {k} nearest known models",
    "to the nearest known model of the answered base",
    "Tukey's far-out fence Q3 + 3 x IQR of the distances at which known models, each held out, "
    "find a known model of their own base",
    "no base model is carried by two known models", _neighbors, _neighbors_threshold))


# ---- paper ----------------------------------------------------------------------------------------

def _paper(known: KnownSet, to_models: np.ndarray, to_centroids: np.ndarray) -> Choice:
    centers = np.flatnonzero(known.is_center)
    i = int(centers[np.argmin(to_models[centers])])
    return Choice(known.bases[i], float(to_models[i]))


register(RuleSpec(
    Rule.PAPER, "the nearest center model", "to the nearest center model",
    f"fixed at {PAPER_THRESHOLD:g}, as in the paper's code", "", _paper,
    lambda known: PAPER_THRESHOLD))


# ---- centroid -------------------------------------------------------------------------------------

def _centroid(known: KnownSet, to_models: np.ndarray, to_centroids: np.ndarray) -> Choice:
    c = int(np.argmin(to_centroids))
    rows = np.flatnonzero(known.cluster == c)
    pool = rows[known.is_center[rows]] if known.is_center[rows].any() else rows
    i = int(pool[np.argmin(to_models[pool])])
    return Choice(known.bases[i], float(to_centroids[c]))


def _centroid_threshold(known: KnownSet) -> float:
    spread = np.linalg.norm(known.vectors - known.centroids[known.cluster], axis=1)
    return THRESHOLD_MARGIN * float(spread.max())


register(RuleSpec(
    Rule.CENTROID, "the nearest K-Means centroid's center model nearest to the fingerprint",
    "to the nearest centroid",
    f"{THRESHOLD_MARGIN} x the largest member-to-centroid distance of the known set",
    "every cluster is a single model", _centroid, _centroid_threshold))
