"""Which rule to trust on a known set: the leave-one-out accuracy of every rule, and what each rule
answers for the models of a whole family held out of the known set (where ``unknown`` is right).

Everything is refitted from a fitted classifier's own state (its members' features, labels and
parameters), so a classifier loaded from ``clusters.json`` validates the same way. Each rule runs
with its own default threshold, learned from the models that remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tensorguard.clustering.estimator import UNKNOWN, BaseSource, FamilyClassifier, Member
from tensorguard.clustering.kmeans import distances
from tensorguard.clustering.rules import RULES, Rule, held_out_sibling_distances
from tensorguard.fingerprints import FEATURE_KEYS, Fingerprint
from tensorguard.reference import Label


@dataclass(frozen=True)
class Miss:
    """A held-out model a rule did not answer right."""

    model: str
    truth: str  # its base model, or ``unknown`` when no other known model carries it
    answer: str


@dataclass(frozen=True)
class RuleScore:
    """One rule's leave-one-out result over the non-center known models."""

    rule: Rule
    evaluated: int
    right: int
    unknown: int  # answered ``unknown`` although their base is known (counted wrong)
    accuracy: float | None
    misses: tuple[Miss, ...]


@dataclass(frozen=True)
class HeldOutFamily:
    """A whole family held out of the known set (its centers too): how many of its models each rule
    calls ``unknown`` (the right answer), and how far they are from what remains."""

    family: str
    models: tuple[str, ...]
    unknown: dict[Rule, int]
    nearest_known: tuple[float, ...]  # each model's distance to the nearest remaining known model
    threshold: float  # the neighbors rule's threshold learned without the family


@dataclass(frozen=True)
class Validation:
    """``validate``'s result: leave-one-out per rule, and each family held out in turn."""

    evaluated: int
    truth_from_labels: int  # held-out models whose base came from labels (the rest: the clustering)
    leave_one_out: tuple[RuleScore, ...]
    families: tuple[HeldOutFamily, ...]
    sibling_distances: tuple[float, ...]  # known models held out: to their nearest same-base model


def _fingerprint(m: Member) -> Fingerprint:
    return Fingerprint(m.name, dict(zip(FEATURE_KEYS, m.features, strict=True)), 0, 0)


def refit(clf: FamilyClassifier, keep: Sequence[Member]) -> FamilyClassifier:
    """``clf`` fitted again on the members ``keep``, with their labels and the centers among them."""
    names = {m.name for m in keep}
    labels = {m.name: Label(m.base, m.family) for m in keep if m.base_source is BaseSource.LABEL}
    return FamilyClassifier(**{**clf.get_params(), "centers": [c for c in clf.centers_ if c in names]}
                            ).fit([_fingerprint(m) for m in keep], labels)


def _answers(clf: FamilyClassifier, m: Member) -> dict[Rule, str]:
    return {rule: clf.set_params(rule=rule).predict([_fingerprint(m)])[0].verdict for rule in RULES}


def leave_one_out(clf: FamilyClassifier) -> tuple[RuleScore, ...]:
    """Each non-center known model held out in turn, the rest refitted, every rule asked."""
    answers, truths = [], []
    for m in clf.members_:
        if not m.is_center:
            rest = refit(clf, [x for x in clf.members_ if x is not m])
            answers.append(_answers(rest, m))
            truths.append(m.base if any(x.base == m.base for x in rest.members_) else UNKNOWN)
    models = [m.name for m in clf.members_ if not m.is_center]
    out = []
    for rule in RULES:
        misses = tuple(Miss(n, t, a[rule]) for n, t, a in zip(models, truths, answers, strict=True)
                       if a[rule] != t)
        n = len(models)
        out.append(RuleScore(rule, n, n - len(misses), sum(x.answer == UNKNOWN for x in misses),
                             (n - len(misses)) / n if n else None, misses))
    return tuple(out)


def leave_family_out(clf: FamilyClassifier) -> tuple[HeldOutFamily, ...]:
    """Each labelled family held out in turn (when at least one center remains)."""
    family = {m.name: m.family or clf.family_of(m.base) for m in clf.members_}
    out = []
    for name in sorted({f for f in family.values() if f}):
        held = [m for m in clf.members_ if family[m.name] == name]
        rest = [m for m in clf.members_ if family[m.name] != name]
        if not any(m.is_center for m in rest):
            continue
        known = refit(clf, rest)
        answers = [_answers(known, m) for m in held]
        to_known = distances(known.transform([_fingerprint(m) for m in held]),
                             known.member_vectors()).min(axis=1)
        out.append(HeldOutFamily(name, tuple(m.name for m in held),
                                 {rule: sum(a[rule] == UNKNOWN for a in answers) for rule in RULES},
                                 tuple(to_known.tolist()), known.thresholds_[Rule.NEIGHBORS]))
    return tuple(out)


def validate(clf: FamilyClassifier) -> Validation:
    """Leave-one-out per rule and leave-family-out, on the known set of ``clf``."""
    evaluated = [m for m in clf.members_ if not m.is_center]
    siblings = held_out_sibling_distances(np.array([m.features for m in clf.members_]),
                                          [m.base for m in clf.members_])
    return Validation(len(evaluated), sum(m.base_source is BaseSource.LABEL for m in evaluated),
                      leave_one_out(clf), leave_family_out(clf), tuple(np.sort(siblings).tolist()))
