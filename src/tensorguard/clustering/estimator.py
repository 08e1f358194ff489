"""``FamilyClassifier``: family clustering of fingerprints around named center models, and the
family of new ones, as a scikit-learn-style estimator.

The constructor only stores parameters; ``fit`` validates them and learns attributes ending in
``_`` (the scaler, the clusters, the members' standardised vectors, the unknown-model threshold);
``predict`` never re-reads the clustering set. ``save``/``load`` keep all of it in
``clusters.json`` (deterministic bytes, schema ``tensorguard.clusters/1``).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorguard import __version__
from tensorguard.clustering.evaluation import Evaluation, evaluate
from tensorguard.clustering.kmeans import (
    Method,
    centered_kmeans,
    distances,
    gmm_from,
    seed_centroids,
    silhouette,
)
from tensorguard.enums import TextEnum
from tensorguard.errors import OptionError, TensorguardError
from tensorguard.fingerprints import FEATURE_KEYS, Fingerprint
from tensorguard.outputs import write_text_atomic
from tensorguard.reference import Label

SCHEMA = "tensorguard.clusters/1"
#: The paper's 8 center models of the bundled reference set.
PAPER_CENTERS = ("gemma-3-4b-it", "Llama-3.1-8B", "llama-3.2-1b", "Llama-3.2-3B", "Mistral-7B-v0.1",
                 "phi-4", "Qwen2.5-3B", "Qwen2.5-7B-Instruct")
UNKNOWN = "unknown"
#: Default unknown-model threshold = THRESHOLD_MARGIN x the largest member-to-centroid distance.
THRESHOLD_MARGIN = 1.25
THRESHOLD_RULE = f"{THRESHOLD_MARGIN} x the largest member-to-centroid distance of the clustering set"


class Rule(TextEnum):
    """How ``predict`` names the family of a fingerprint."""

    CENTROID = "centroid"  # the nearest cluster centroid


@dataclass(frozen=True)
class Member:
    """A model of the clustering set: its cluster and standardised vector."""

    name: str
    cluster: str
    is_center: bool
    distance: float  # to its cluster's centroid
    vector: tuple[float, ...]


@dataclass(frozen=True)
class Cluster:
    """One cluster: named after the center(s) it holds (``A+B`` for two), or ``cluster-N``."""

    name: str
    centers: tuple[str, ...]
    members: tuple[str, ...]
    centroid: tuple[float, ...]


@dataclass(frozen=True)
class Neighbour:
    """A known model near an unknown one."""

    model: str
    cluster: str
    distance: float


@dataclass(frozen=True)
class UnknownPrediction:
    """Verdict for one fingerprint: a cluster name, or ``unknown`` beyond the threshold."""

    model: str
    verdict: str
    nearest_cluster: str
    distance: float
    threshold: float
    cluster_distances: dict[str, float]
    center_distances: dict[str, float]
    nearest_models: tuple[Neighbour, ...]


def _center_indices(names: Sequence[str], centers: Sequence[str]) -> list[int]:
    if not centers:
        raise OptionError("centers", "", "name at least one center model")
    index = {n: i for i, n in enumerate(names)}
    out = []
    for c in centers:
        if c not in index:
            close = difflib.get_close_matches(c, names, n=3, cutoff=0.3)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise TensorguardError(f"center {c!r} matches no fingerprint{hint}")
        if index[c] in out:
            raise OptionError("centers", ",".join(centers), f"{c!r} is named twice")
        out.append(index[c])
    return out


class FamilyClassifier:
    """Clusters fingerprints into families around named center models and predicts the family
    of new fingerprints (or ``unknown``).

    Args:
        centers: model names (among the fingerprints given to ``fit``) that start the clusters.
        k: number of clusters (default: one per center; extra ones are seeded by k-means++).
        method: ``kmeans``, or ``gmm`` (a Gaussian mixture started from K-Means).
        rule: how ``predict`` answers (``centroid``: the nearest cluster centroid).
        random_state: seed of the extra k-means++ centroids and of the GMM.

    Example::

        clf = FamilyClassifier(centers=["llama-3.2-1b", "phi-4"]).fit(load_fingerprints("features/"))
        print(clf.predict([load_fingerprint("mine_features.json")])[0].verdict)
    """

    def __init__(self, *, centers: Sequence[str] = (), k: int | None = None,
                 method: Method | str = Method.KMEANS, rule: Rule | str = Rule.CENTROID,
                 random_state: int = 0) -> None:
        self.centers = centers
        self.k = k
        self.method = method
        self.rule = rule
        self.random_state = random_state

    # ---- fitting -------------------------------------------------------------------------------

    def _validated(self) -> tuple[Method, Rule]:
        try:
            method = Method(self.method)
        except ValueError:
            raise OptionError("method", self.method, f"choose one of {', '.join(Method)}") from None
        try:
            rule = Rule(self.rule)
        except ValueError:
            raise OptionError("rule", self.rule, f"choose one of {', '.join(Rule)}") from None
        if self.k is not None and self.k < max(1, len(self.centers)):
            raise OptionError("k", self.k, f"fewer than the {len(self.centers)} named centers")
        return method, rule

    def fit(self, fingerprints: Sequence[Fingerprint]) -> FamilyClassifier:
        """Learn the clusters of ``fingerprints`` (all 14 features each)."""
        method, _ = self._validated()
        names = [fp.model_name for fp in fingerprints]
        center_idx = _center_indices(names, list(self.centers))
        k = self.k or len(center_idx)
        if len(fingerprints) < k:
            raise TensorguardError(f"{len(fingerprints)} fingerprint(s) cannot make {k} clusters")
        from sklearn.preprocessing import StandardScaler

        X = np.array([fp.vector() for fp in fingerprints])
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        init = seed_centroids(Z, center_idx, k, random_state=self.random_state)
        part = centered_kmeans(Z, init)
        if method is Method.GMM:
            part = gmm_from(Z, part, random_state=self.random_state)
        labels, centroids = part.labels, part.centroids
        self.n_iter_ = part.n_iter
        cluster_names = [
            "+".join(names[i] for i in center_idx if labels[i] == c) or f"cluster-{c}"
            for c in range(len(centroids))]
        dist = np.linalg.norm(Z - centroids[labels], axis=1)
        self.clusters_ = tuple(
            Cluster(cluster_names[c], tuple(names[i] for i in center_idx if labels[i] == c),
                    tuple(n for n, lab in zip(names, labels, strict=True) if lab == c),
                    tuple(centroids[c].tolist()))
            for c in range(len(centroids)))
        self.members_ = tuple(Member(n, cluster_names[labels[i]], i in center_idx, float(dist[i]),
                                     tuple(Z[i].tolist())) for i, n in enumerate(names))
        self.centers_ = tuple(names[i] for i in center_idx)
        self.threshold_ = THRESHOLD_MARGIN * float(dist.max())
        self.threshold_rule_ = THRESHOLD_RULE
        self.silhouette_ = silhouette(Z, labels)
        return self

    # ---- the fitted state ----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "members_"):
            raise TensorguardError("this FamilyClassifier is not fitted yet: call fit() or load()")

    def transform(self, fingerprints: Sequence[Fingerprint]) -> np.ndarray:
        """The fingerprints' 14 features in the fitted standardised space."""
        self._check_fitted()
        return np.asarray(self.scaler_.transform(np.array([fp.vector() for fp in fingerprints])))

    def centroids(self) -> np.ndarray:
        return np.array([c.centroid for c in self.clusters_])

    def member_vectors(self) -> np.ndarray:
        return np.array([m.vector for m in self.members_])

    def cluster_of(self) -> dict[str, str]:
        """Member name -> cluster name."""
        return {m.name: m.cluster for m in self.members_}

    # ---- prediction ----------------------------------------------------------------------------

    def predict(self, fingerprints: Sequence[Fingerprint], *,
                threshold: float | None = None) -> tuple[UnknownPrediction, ...]:
        """The family of each fingerprint, or ``unknown`` beyond ``threshold`` (default: the
        threshold learned by ``fit``)."""
        self._check_fitted()
        if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
            raise OptionError("threshold", threshold, "must be a positive number")
        limit = self.threshold_ if threshold is None else float(threshold)
        if limit <= 0:
            raise OptionError("threshold", None, "every cluster is a single model, so the "
                              "clustering set gives none: pass one")
        Z = self.transform(fingerprints)
        cd, md = distances(Z, self.centroids()), distances(Z, self.member_vectors())
        out = []
        for fp, to_clusters, to_members in zip(fingerprints, cd, md, strict=True):
            c = int(to_clusters.argmin())
            name = self.clusters_[c].name
            order = np.argsort(to_members, kind="stable")[:3]
            centers = {m.name: float(d) for m, d in zip(self.members_, to_members, strict=True)
                       if m.is_center}
            out.append(UnknownPrediction(
                fp.model_name, name if to_clusters[c] <= limit else UNKNOWN, name,
                float(to_clusters[c]), limit,
                {cl.name: float(d) for cl, d in zip(self.clusters_, to_clusters, strict=True)},
                {c_: centers[c_] for c_ in self.centers_},
                tuple(Neighbour(self.members_[i].name, self.members_[i].cluster,
                                float(to_members[i])) for i in order)))
        return tuple(out)

    # ---- evaluation ----------------------------------------------------------------------------

    def evaluate(self, labels: Mapping[str, Label]) -> Evaluation:
        """Share of labelled members that sit in the cluster of their base model, and purity."""
        self._check_fitted()
        where = self.cluster_of()
        base = {m: lab.base_model for m, lab in labels.items()}
        return evaluate(where, {m: where.get(b) for m, b in base.items()}, base)

    def evaluate_predictions(self, predictions: Sequence[UnknownPrediction],
                             labels: Mapping[str, Label]) -> Evaluation:
        """Right when the verdict is the cluster of the base model, or ``unknown`` for a base
        not in the clustering set."""
        where = self.cluster_of()
        base = {m: lab.base_model for m, lab in labels.items()}
        return evaluate({p.model: p.verdict for p in predictions},
                        {m: where.get(b, UNKNOWN) for m, b in base.items()}, base)

    # ---- clusters.json -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as plain JSON values (what ``save`` writes, and ``--json`` shows)."""
        self._check_fitted()
        from tensorguard.report import to_jsonable

        return {
            "method": Method(self.method).value, "random_state": self.random_state,
            "feature_keys": list(FEATURE_KEYS),
            "scaler_mean": self.scaler_.mean_.tolist(), "scaler_scale": self.scaler_.scale_.tolist(),
            "centers": list(self.centers_), "threshold": self.threshold_,
            "threshold_rule": self.threshold_rule_, "silhouette": self.silhouette_,
            "clusters": to_jsonable(self.clusters_), "members": to_jsonable(self.members_),
            "schema": SCHEMA, "tensorguard_version": __version__,
        }

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write ``clusters.json`` atomically (deterministic bytes), ``schema`` first."""
        data = self.to_dict()
        data = {"schema": data.pop("schema"), "tensorguard_version": data.pop("tensorguard_version"),
                **data}
        return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n", force=force)

    @classmethod
    def load(cls, path: str | Path) -> FamilyClassifier:
        """Read a ``clusters.json`` written by ``save``; one-line errors for anything else."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TensorguardError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TensorguardError(f"{path}: not a clusters file ({exc})") from None
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TensorguardError(f"{path}: not a {SCHEMA} clusters file ({exc})") from None

    @classmethod
    def _from_dict(cls, data: Any) -> FamilyClassifier:
        from sklearn.preprocessing import StandardScaler

        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise ValueError(f"schema {schema!r} is not {SCHEMA!r}")
        if tuple(data["feature_keys"]) != FEATURE_KEYS:
            raise ValueError("feature_keys differ from this tensorguard's 14 features")
        clf = cls(centers=tuple(data["centers"]), method=Method(data["method"]),
                  random_state=int(data["random_state"]))
        clf.clusters_ = tuple(Cluster(c["name"], tuple(c["centers"]), tuple(c["members"]),
                                      tuple(map(float, c["centroid"]))) for c in data["clusters"])
        clf.members_ = tuple(Member(m["name"], m["cluster"], bool(m["is_center"]),
                                    float(m["distance"]), tuple(map(float, m["vector"])))
                             for m in data["members"])
        mean, scale = np.array(data["scaler_mean"], float), np.array(data["scaler_scale"], float)
        dims = {len(mean), len(scale), *(len(c.centroid) for c in clf.clusters_),
                *(len(m.vector) for m in clf.members_)}
        if dims != {len(FEATURE_KEYS)} or not clf.clusters_ or not clf.members_:
            raise ValueError("vectors of the wrong length, or no clusters or members")
        clf.scaler_ = StandardScaler()
        clf.scaler_.mean_, clf.scaler_.scale_ = mean, scale
        clf.scaler_.var_, clf.scaler_.n_features_in_ = scale**2, len(FEATURE_KEYS)
        clf.centers_ = tuple(data["centers"])
        clf.threshold_ = float(data["threshold"])
        clf.threshold_rule_ = str(data["threshold_rule"])
        clf.silhouette_ = None if data["silhouette"] is None else float(data["silhouette"])
        return clf
