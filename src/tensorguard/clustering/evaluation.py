"""How well cluster assignments or predictions agree with known base models."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Misassigned:
    """A labelled model that did not land where its label says."""

    model: str
    base_model: str
    assigned: str
    expected: str


@dataclass(frozen=True)
class Evaluation:
    """Agreement of cluster assignments with known base models."""

    evaluated: int
    correct: int
    accuracy: float | None
    purity: float | None  # share of models in their cluster's majority base model
    misassigned: tuple[Misassigned, ...]
    unlabelled: tuple[str, ...]


def evaluate(assigned: Mapping[str, str], expected: Mapping[str, str | None],
             base_of: Mapping[str, str]) -> Evaluation:
    """Score ``assigned`` (model -> cluster name) against ``expected`` (model -> right cluster name).

    ``base_of`` gives each labelled model's base; models missing from it, or whose ``expected`` is
    None (their base is not in the clustering set), are listed as unlabelled and not scored.
    """
    scored = [m for m in assigned if m in base_of and expected.get(m) is not None]
    wrong = tuple(Misassigned(m, base_of[m], assigned[m], str(expected[m]))
                  for m in scored if assigned[m] != expected[m])
    by_cluster: dict[str, Counter[str]] = {}
    for m in scored:
        by_cluster.setdefault(assigned[m], Counter())[base_of[m]] += 1
    majority = sum(c.most_common(1)[0][1] for c in by_cluster.values())
    n = len(scored)
    return Evaluation(n, n - len(wrong), (n - len(wrong)) / n if n else None,
                      majority / n if n else None, wrong,
                      tuple(m for m in assigned if m not in scored))
