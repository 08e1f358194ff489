"""Fingerprint distance, standardised by a fixed reference population and put in context.

The 14 features are z-scored with the mean and standard deviation of the reference fingerprints
(the bundled ``features/`` set by default), so a distance means the same in every call. With
the reference labels (``labels.csv``), a distance is placed among the distances of reference
pairs sharing a base model and of pairs from different families (empirical percentiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from tensorguard.fingerprints import FEATURE_KEYS, Fingerprint, load_fingerprints
from tensorguard.reference import LABELS_FILE, bundled_dir, load_labels


@dataclass(frozen=True)
class Reference:
    """A reference population: feature scaling plus the labelled pair distances."""

    directory: Path
    models: int
    mean: np.ndarray
    scale: np.ndarray
    same_base: np.ndarray  # sorted distances of reference pairs with one base model
    different_family: np.ndarray  # sorted distances of reference pairs of different families

    def distance(self, a: Fingerprint, b: Fingerprint) -> float:
        """Euclidean distance between the standardised 14-feature vectors."""
        return float(np.linalg.norm((a.vector() - b.vector()) / self.scale))


def load_reference(directory: str | Path | None = None) -> Reference:
    """The fingerprints of ``directory`` (default: the bundled set) and, if present, its labels."""
    directory = Path(directory) if directory is not None else bundled_dir()
    fps = load_fingerprints([directory])
    vectors = np.stack([fp.vector() for fp in fps])
    mean, std = vectors.mean(axis=0), vectors.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    same, different = [], []
    labels_path = directory / LABELS_FILE
    if labels_path.is_file():
        labels = load_labels(labels_path)
        z = (vectors - mean) / scale
        for i, j in combinations(range(len(fps)), 2):
            la, lb = labels.get(fps[i].model_name), labels.get(fps[j].model_name)
            if la is None or lb is None:
                continue
            d = float(np.linalg.norm(z[i] - z[j]))
            if la.base_model == lb.base_model:
                same.append(d)
            elif la.family and lb.family and la.family != lb.family:
                different.append(d)
    return Reference(directory, len(fps), mean, scale, np.sort(same), np.sort(different))


@dataclass(frozen=True)
class FingerprintDistance:
    """A standardised distance and where it falls among labelled reference pairs.

    ``same_base_percentile``: share (%) of same-base reference pairs at most this far apart;
    ``different_family_percentile``: the same among different-family pairs (low: closer than
    nearly all unrelated pairs). ``None`` when the reference has no such labelled pairs.
    ``distance`` is ``None`` (with the ``reason``) when a fingerprint lacks features: a model with
    no recognised attention, MLP or embedding tensor has only the global ones.
    """

    distance: float | None
    reference: str
    reference_models: int
    same_base_pairs: int
    same_base_percentile: float | None
    different_family_pairs: int
    different_family_percentile: float | None
    reason: str | None = None


def _percentile(sorted_values: np.ndarray, value: float) -> float | None:
    if not sorted_values.size:
        return None
    return float(100.0 * np.searchsorted(sorted_values, value, side="right") / sorted_values.size)


def not_computed(reference: Reference) -> FingerprintDistance:
    """The distance of a pair where a fingerprint was not computed."""
    return FingerprintDistance(None, str(reference.directory), reference.models,
                               int(reference.same_base.size), None, int(reference.different_family.size),
                               None, reason="a fingerprint was not computed")


def fingerprint_distance(a: Fingerprint, b: Fingerprint, reference: Reference) -> FingerprintDistance:
    """The standardised distance between two fingerprints, in the reference's context."""
    lacking = [fp.model_name for fp in (a, b) if set(fp.features) != set(FEATURE_KEYS)]
    if lacking:
        return FingerprintDistance(
            None, str(reference.directory), reference.models, int(reference.same_base.size), None,
            int(reference.different_family.size), None,
            reason=f"{', '.join(lacking)}: no recognised attention, MLP or embedding tensor, so "
                   "only the global fingerprint features")
    d = reference.distance(a, b)
    return FingerprintDistance(
        distance=d, reference=str(reference.directory), reference_models=reference.models,
        same_base_pairs=int(reference.same_base.size),
        same_base_percentile=_percentile(reference.same_base, d),
        different_family_pairs=int(reference.different_family.size),
        different_family_percentile=_percentile(reference.different_family, d))
