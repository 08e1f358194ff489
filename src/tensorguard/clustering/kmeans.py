"""K-Means started at named center models, and a Gaussian mixture started from it: arrays only.

scikit-learn does the clustering (``KMeans`` with the centers' own vectors as ``init``, one run,
Lloyd's algorithm to convergence, so the result is deterministic). What it cannot do is extend a
given set of centers with k-means++ picks, so ``seed_centroids`` does that (D^2 sampling from a
fixed seed). Rows of ``Z`` are standardised fingerprints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tensorguard.enums import TextEnum


class Method(TextEnum):
    KMEANS = "kmeans"
    GMM = "gmm"  # a diagonal Gaussian mixture whose every parameter starts from K-Means


def distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of ``A`` to every row of ``B``, from the differences
    (scikit-learn's ``pairwise_distances`` expands the square and loses small distances)."""
    diff = np.asarray(A, dtype=np.float64)[:, None, :] - np.asarray(B, dtype=np.float64)[None, :, :]
    return np.asarray(np.linalg.norm(diff, axis=2))


def standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the rows of ``X`` as scikit-learn's ``StandardScaler`` defines them: the
    population standard deviation, and scale 1 for a feature constant up to rounding. Standardised
    rows are ``(X - mean) / scale``. (Plain numpy: leave-one-out refits this hundreds of times, and
    the scaler's input checks cost 50x the sums; a test proves both equal.)"""
    X = np.asarray(X, dtype=np.float64)
    mean, var = X.mean(axis=0), X.var(axis=0)
    n, eps = len(X), np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    return mean, np.where(constant, 1.0, np.sqrt(var))


def seed_centroids(Z: np.ndarray, center_indices: Sequence[int], n_clusters: int, *,
                   random_state: int = 0) -> np.ndarray:
    """The centers' own vectors, then k-means++ picks (D^2 sampling) for any extra clusters
    (scikit-learn's ``kmeans_plusplus`` cannot start from given centers)."""
    rng = np.random.default_rng(random_state)
    chosen = list(center_indices)
    while len(chosen) < n_clusters:
        d2 = distances(Z, Z[chosen]).min(axis=1) ** 2
        total = d2.sum()
        if total <= 0:  # every point coincides with a chosen one; take the first unused
            chosen.append(next(i for i in range(len(Z)) if i not in chosen))
        else:
            chosen.append(int(rng.choice(len(Z), p=d2 / total)))
    return np.array(Z[chosen], dtype=np.float64)


@dataclass(frozen=True)
class Partition:
    """A clustering of the rows: ``labels`` index ``centroids``; every centroid has members."""

    labels: np.ndarray
    centroids: np.ndarray
    n_iter: int


def _compact(labels: np.ndarray, centroids: np.ndarray, n_iter: int) -> Partition:
    used = np.unique(labels)
    return Partition(np.searchsorted(used, labels), centroids[used], n_iter)


def centered_kmeans(Z: np.ndarray, init: np.ndarray, *, max_iter: int = 300) -> Partition:
    """K-Means from ``init`` until no label changes (``tol=0``)."""
    from sklearn.cluster import KMeans

    km = KMeans(len(init), init=init, n_init=1, algorithm="lloyd", tol=0.0, max_iter=max_iter)
    labels = km.fit(Z).labels_
    # centroids as the exact means of their members: scikit-learn's accumulated sums round (a
    # singleton's centroid lands 3e-16 off its only member, and so would the unknown threshold)
    centroids = np.array([Z[labels == c].mean(axis=0) if np.any(labels == c) else km.cluster_centers_[c]
                          for c in range(len(init))])
    return _compact(labels, centroids, int(km.n_iter_))


def gmm_from(Z: np.ndarray, start: Partition, *, random_state: int = 0, max_iter: int = 300,
             reg_covar: float = 1e-3) -> Partition:
    """A diagonal-covariance Gaussian mixture whose weights, means and variances start from
    ``start`` (a K-Means partition)."""
    from sklearn.mixture import GaussianMixture

    labels, centroids = start.labels, start.centroids
    k = len(centroids)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    var = np.array([((Z[labels == c] - centroids[c]) ** 2).mean(axis=0) if counts[c]
                    else np.ones(Z.shape[1]) for c in range(k)]) + reg_covar
    weights = np.maximum(counts, 0.5)
    gmm = GaussianMixture(k, covariance_type="diag", reg_covar=reg_covar,
                          weights_init=weights / weights.sum(), means_init=centroids,
                          precisions_init=1.0 / var, random_state=random_state, max_iter=max_iter)
    gmm.fit(Z)
    return _compact(gmm.predict(Z), gmm.means_, int(gmm.n_iter_))


def silhouette(Z: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette coefficient (None when there are fewer than 2 or as many clusters as rows)."""
    from sklearn.metrics import silhouette_score

    k = len(np.unique(labels))
    if k < 2 or k >= len(labels):
        return None
    return float(silhouette_score(Z, labels))
