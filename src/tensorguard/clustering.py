"""Family clustering maths over arrays: standardisation, centered K-Means / GMM, prediction.

Pure functions and scikit-learn-style estimators (parameters in ``__init__``, learned state in
attributes ending in ``_``); no files, no fingerprints. Rows of ``X`` are models, columns features.
K-Means is Lloyd's algorithm started from the named center models' own vectors (the paper's
"user-defined centers"), so it is deterministic; extra centroids, when ``n_clusters`` exceeds the
number of centers, are seeded by k-means++ from a fixed ``random_state``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tensorguard.errors import TensorguardError

METHODS = ("kmeans", "gmm")
#: Default unknown-model threshold = THRESHOLD_MARGIN x the largest member-to-centroid distance.
THRESHOLD_MARGIN = 1.25
THRESHOLD_RULE = f"{THRESHOLD_MARGIN} x the largest member-to-centroid distance of the clustering set"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Scaler:
    """Z-score standardisation learned from a clustering set (a zero spread divides by one)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Scaler:
        X = np.asarray(X, dtype=np.float64)
        std = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale


def pairwise_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of ``A`` to every row of ``B``."""
    return np.linalg.norm(np.asarray(A)[:, None, :] - np.asarray(B)[None, :, :], axis=2)


def seed_centroids(Z: np.ndarray, center_indices: Sequence[int], n_clusters: int,
                   random_state: int = 0) -> np.ndarray:
    """The centers' own vectors, then k-means++ picks (D^2 sampling) for any extra clusters."""
    rng = np.random.default_rng(random_state)
    chosen = list(center_indices)
    while len(chosen) < n_clusters:
        d2 = pairwise_distances(Z, Z[chosen]).min(axis=1) ** 2
        total = d2.sum()
        if total <= 0:  # every point coincides with a chosen one; take the first unused
            chosen.append(next(i for i in range(len(Z)) if i not in chosen))
        else:
            chosen.append(int(rng.choice(len(Z), p=d2 / total)))
    return Z[chosen].copy()


def lloyd(Z: np.ndarray, init: np.ndarray, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray, int]:
    """K-Means from ``init`` until no label changes: (labels, centroids, iterations).

    An emptied cluster keeps its previous centroid; ties go to the lower cluster index.
    """
    centroids = np.array(init, dtype=np.float64)
    labels = pairwise_distances(Z, centroids).argmin(axis=1)
    for iteration in range(1, max_iter + 1):
        for c in range(len(centroids)):
            if np.any(labels == c):
                centroids[c] = Z[labels == c].mean(axis=0)
        new = pairwise_distances(Z, centroids).argmin(axis=1)
        if np.array_equal(new, labels):
            return labels, centroids, iteration
        labels = new
    return labels, centroids, max_iter


class CenteredKMeans:
    """K-Means (or a GMM started from it) whose initial centroids are chosen models' vectors.

    ``fit(Z, center_indices)`` sets ``labels_`` (compacted: every cluster index in
    ``range(len(cluster_centers_))`` has members), ``cluster_centers_`` (K-Means centroids or GMM
    means) and ``n_iter_``.
    """

    def __init__(self, n_clusters: int | None = None, method: str = "kmeans", random_state: int = 0,
                 max_iter: int = 300, reg_covar: float = 1e-3) -> None:
        if method not in METHODS:
            raise TensorguardError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
        self.n_clusters = n_clusters
        self.method = method
        self.random_state = random_state
        self.max_iter = max_iter
        self.reg_covar = reg_covar

    def fit(self, Z: np.ndarray, center_indices: Sequence[int]) -> CenteredKMeans:
        Z = np.asarray(Z, dtype=np.float64)
        k = self.n_clusters or len(center_indices)
        if k < max(1, len(center_indices)):
            raise TensorguardError(f"--k {k} is fewer than the {len(center_indices)} named centers")
        if len(Z) < k:
            raise TensorguardError(f"{len(Z)} fingerprint(s) cannot make {k} clusters")
        init = seed_centroids(Z, center_indices, k, self.random_state)
        labels, centroids, self.n_iter_ = lloyd(Z, init, self.max_iter)
        if self.method == "gmm":
            labels, centroids = self._gmm(Z, labels, centroids)
        used = np.unique(labels)
        self.labels_ = np.searchsorted(used, labels)
        self.cluster_centers_ = centroids[used]
        return self

    def _gmm(self, Z: np.ndarray, labels: np.ndarray,
             centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A diagonal-covariance Gaussian mixture whose every parameter starts from K-Means."""
        from sklearn.mixture import GaussianMixture

        k = len(centroids)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        var = np.array([((Z[labels == c] - centroids[c]) ** 2).mean(axis=0) if counts[c]
                        else np.ones(Z.shape[1]) for c in range(k)]) + self.reg_covar
        gmm = GaussianMixture(k, covariance_type="diag", reg_covar=self.reg_covar,
                              weights_init=np.maximum(counts, 0.5) / np.maximum(counts, 0.5).sum(),
                              means_init=centroids, precisions_init=1.0 / var,
                              random_state=self.random_state, max_iter=self.max_iter)
        gmm.fit(Z)
        return gmm.predict(Z), gmm.means_

    def predict(self, Z: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid of each row."""
        return pairwise_distances(Z, self.cluster_centers_).argmin(axis=1)


def silhouette(Z: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette coefficient (None when there are fewer than 2 or as many clusters as rows)."""
    labels = np.asarray(labels)
    n, k = len(labels), len(np.unique(labels))
    if k < 2 or k >= n:
        return None
    D = pairwise_distances(Z, Z)
    scores = np.zeros(n)
    for i in range(n):
        same = labels == labels[i]
        if same.sum() == 1:
            continue  # a singleton scores 0
        a = D[i, same].sum() / (same.sum() - 1)
        b = min(D[i, labels == c].mean() for c in np.unique(labels) if c != labels[i])
        scores[i] = (b - a) / max(a, b)
    return float(scores.mean())


def name_clusters(labels: np.ndarray, center_indices: Sequence[int], names: Sequence[str],
                  n_clusters: int) -> list[str]:
    """Each cluster named after the center(s) it holds (``A+B`` for two), else ``cluster-N``."""
    out = []
    for c in range(n_clusters):
        held = [names[i] for i in center_indices if labels[i] == c]
        out.append("+".join(held) if held else f"cluster-{c}")
    return out


def member_distances(Z: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Distance of each row to the centroid of its own cluster."""
    return np.linalg.norm(np.asarray(Z) - np.asarray(centroids)[np.asarray(labels)], axis=1)


def default_threshold(distances: np.ndarray) -> float:
    """The unknown-model threshold derived from a clustering set's member-to-centroid distances.

    ``THRESHOLD_MARGIN`` x the largest: every model of the clustering set is within it, and the
    margin leaves room for a new derivative of a known base that sits a bit outside its cluster.
    """
    distances = np.asarray(distances, dtype=np.float64)
    if distances.size == 0:
        raise TensorguardError("no member distances to derive a threshold from")
    return float(THRESHOLD_MARGIN * distances.max())


@dataclass(frozen=True)
class Prediction:
    """Where one standardised vector falls among the clusters."""

    cluster: int  # index of the nearest centroid
    distance: float  # to that centroid
    known: bool  # distance <= threshold
    centroid_distances: np.ndarray
    model_distances: np.ndarray  # to every member of the clustering set


def predict_one(z: np.ndarray, centroids: np.ndarray, members: np.ndarray,
                threshold: float) -> Prediction:
    """Nearest centroid of ``z``; beyond ``threshold`` the model is not of a known family."""
    cd = pairwise_distances(np.asarray(z)[None, :], centroids)[0]
    md = pairwise_distances(np.asarray(z)[None, :], members)[0]
    c = int(cd.argmin())
    return Prediction(c, float(cd[c]), bool(cd[c] <= threshold), cd, md)


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
