"""``FamilyClassifier``: family clustering of fingerprints around named center models, and the
base model of new ones, as a scikit-learn-style estimator.

The constructor only stores parameters; ``fit`` validates them and learns attributes ending in
``_`` (the standardisation, the clusters, each known model's features and base model, each rule's
unknown-model threshold); ``predict`` never re-reads the known set. ``save``/``load`` keep all of it
in ``clusters.json`` (deterministic bytes, schema ``tensorguard.clusters/3``).
"""

from __future__ import annotations

import difflib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

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
    standardise,
)
from tensorguard.clustering.rules import RULES, KnownSet, Rule, RuleSpec
from tensorguard.enums import TextEnum
from tensorguard.errors import OptionError, TensorguardError
from tensorguard.fingerprints import FEATURE_KEYS, Fingerprint
from tensorguard.inputs import read_text_file
from tensorguard.outputs import write_text_atomic
from tensorguard.reference import Label
from tensorguard.validation import choice_option, finite_option, whole_option

SCHEMA = "tensorguard.clusters/3"
#: The paper's 8 center models of the bundled reference set.
PAPER_CENTERS = ("gemma-3-4b-it", "Llama-3.1-8B", "llama-3.2-1b", "Llama-3.2-3B", "Mistral-7B-v0.1",
                 "phi-4", "Qwen2.5-3B", "Qwen2.5-7B-Instruct")
UNKNOWN = "unknown"
#: Known models listed with each prediction.
SHOWN_NEIGHBOURS = 3
PARAMS = ("centers", "k", "method", "rule", "n_neighbors", "random_state")
E = TypeVar("E", bound=Enum)


class BaseSource(TextEnum):
    """Where a known model's base model comes from."""

    LABEL = "label"  # the labels given to fit
    CENTER = "center"  # a center model is its own base
    CLUSTER = "cluster"  # the center of its cluster nearest to it (of all centers if it holds none)


@dataclass(frozen=True)
class Member:
    """A known model: its cluster, base model and features as read."""

    name: str
    cluster: str
    is_center: bool
    base: str
    family: str | None  # from its label
    base_source: BaseSource
    distance: float  # to its cluster's centroid
    features: tuple[float, ...]


@dataclass(frozen=True)
class Cluster:
    """One cluster: named after the center(s) it holds (``A+B`` for two), or ``cluster-N``."""

    name: str
    centers: tuple[str, ...]
    members: tuple[str, ...]
    centroid: tuple[float, ...]


@dataclass(frozen=True)
class Neighbor:
    """A known model near a predicted one."""

    model: str
    base: str
    cluster: str
    distance: float


@dataclass(frozen=True)
class UnknownPrediction:
    """The base model of one fingerprint under one rule, or ``unknown`` beyond the threshold.

    ``base`` is the rule's answer even when the verdict is ``unknown``; ``nearest_cluster`` is
    reported for information only (it may hold two centers, or none), never as an answer.
    """

    model: str
    rule: Rule
    verdict: str  # ``base``, or ``unknown``
    base: str
    family: str | None
    confidence: float | None  # neighbors: the share of the vote that went to ``base``
    distance: float  # what the rule compares with the threshold
    threshold: float
    neighbors: tuple[Neighbor, ...]
    nearest_center: Neighbor
    nearest_cluster: str
    cluster_distances: dict[str, float]
    center_distances: dict[str, float]




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


def _base_of(i: int, names: Sequence[str], Z: np.ndarray, labels: np.ndarray, centers: Sequence[int],
             given: Mapping[str, Label]) -> tuple[str, str | None, BaseSource]:
    """A known model's base: its label, else itself for a center, else its cluster's nearest center
    (of all centers for a cluster that holds none)."""
    label = given.get(names[i])
    family = label.family if label is not None else None
    if label is not None and label.base_model:
        return label.base_model, family, BaseSource.LABEL
    if i in centers:
        return names[i], family, BaseSource.CENTER
    pool = [c for c in centers if labels[c] == labels[i]] or list(centers)
    nearest = pool[int(np.argmin(distances(Z[[i]], Z[pool])[0]))]
    return names[nearest], family, BaseSource.CLUSTER


class FamilyClassifier:
    """Clusters fingerprints into families around named center models and predicts the base model
    of new fingerprints (or ``unknown``).

    Args:
        centers: model names (among the fingerprints given to ``fit``) that start the clusters.
        k: number of clusters (default: one per center; extra ones are seeded by k-means++).
        method: ``kmeans``, or ``gmm`` (a Gaussian mixture started from K-Means).
        rule: how ``predict`` answers: ``neighbors`` (a distance-weighted vote of the
            ``n_neighbors`` nearest known models), ``paper`` (the nearest center model, unknown
            beyond 7) or ``centroid`` (the nearest K-Means centroid); see ``tensorguard.clustering.rules``.
        n_neighbors: known models that vote under the ``neighbors`` rule.
        random_state: seed of the extra k-means++ centroids and of the GMM.

    Example::

        from tensorguard.reference import bundled_dir, load_labels

        bundled = bundled_dir()                            # the bundled reference set
        known = load_fingerprints(bundled)
        clf = FamilyClassifier(centers=PAPER_CENTERS).fit(known, labels=load_labels(bundled / "labels.csv"))
        print(clf.predict([load_fingerprint("mine_features.json")])[0].verdict)
    """

    def __init__(self, *, centers: Sequence[str] = (), k: int | None = None,
                 method: Method | str = Method.KMEANS, rule: Rule | str = Rule.NEIGHBORS,
                 n_neighbors: int = 3, random_state: int = 0) -> None:
        self.centers = centers
        self.k = k
        self.method = method
        self.rule = rule
        self.n_neighbors = n_neighbors
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PARAMS}

    def set_params(self, **params: Any) -> FamilyClassifier:
        """Change parameters (``rule`` and ``n_neighbors`` act on ``predict`` without refitting)."""
        for name, value in params.items():
            if name not in PARAMS:
                raise OptionError(name, value, f"not a parameter (choose among {', '.join(PARAMS)})")
            setattr(self, name, value)
        return self

    # ---- fitting -------------------------------------------------------------------------------

    def _validated(self) -> tuple[Method, Rule]:
        method = choice_option(Method, "method", self.method)
        rule = choice_option(Rule, "rule", self.rule)
        if self.k is not None and self.k < max(1, len(self.centers)):
            raise OptionError("k", self.k, f"fewer than the {len(self.centers)} named centers")
        whole_option("n_neighbors", self.n_neighbors)
        return method, rule

    def fit(self, fingerprints: Sequence[Fingerprint],
            labels: Mapping[str, Label] | None = None) -> FamilyClassifier:
        """Learn the clusters of ``fingerprints`` (all 14 features each) and each one's base model:
        from ``labels`` (model name -> ``Label``) where given, else from the clustering."""
        return self._fit([fp.model_name for fp in fingerprints],
                         np.array([fp.vector() for fp in fingerprints]).reshape(-1, len(FEATURE_KEYS)),
                         labels or {})

    def _fit(self, names: Sequence[str], X: np.ndarray, labels: Mapping[str, Label]) -> FamilyClassifier:
        method, _ = self._validated()
        center_idx = _center_indices(names, list(self.centers))
        k = self.k or len(center_idx)
        if len(names) < k:
            raise TensorguardError(f"{len(names)} fingerprint(s) cannot make {k} clusters")
        self.mean_, self.scale_ = standardise(X)
        Z = (X - self.mean_) / self.scale_
        init = seed_centroids(Z, center_idx, k, random_state=self.random_state)
        part = centered_kmeans(Z, init)
        if method is Method.GMM:
            part = gmm_from(Z, part, random_state=self.random_state)
        assigned, centroids = part.labels, part.centroids
        self.n_iter_ = part.n_iter
        cluster_names = [
            "+".join(names[i] for i in center_idx if assigned[i] == c) or f"cluster-{c}"
            for c in range(len(centroids))]
        dist = np.linalg.norm(Z - centroids[assigned], axis=1)
        self.clusters_ = tuple(
            Cluster(cluster_names[c], tuple(names[i] for i in center_idx if assigned[i] == c),
                    tuple(n for n, a in zip(names, assigned, strict=True) if a == c),
                    tuple(centroids[c].tolist()))
            for c in range(len(centroids)))
        self.members_ = tuple(
            Member(n, cluster_names[assigned[i]], i in center_idx,
                   *_base_of(i, names, Z, assigned, center_idx, labels), float(dist[i]),
                   tuple(X[i].tolist()))
            for i, n in enumerate(names))
        self.centers_ = tuple(names[i] for i in center_idx)
        known = self.known_set()
        self.thresholds_ = {rule: spec.calibrate(known) for rule, spec in RULES.items()}
        self.silhouette_ = silhouette(Z, assigned)
        return self

    # ---- the fitted state ----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "members_"):
            raise TensorguardError("this FamilyClassifier is not fitted yet: call fit() or load()")

    def transform(self, fingerprints: Sequence[Fingerprint]) -> np.ndarray:
        """The fingerprints' 14 features in the fitted standardised space."""
        self._check_fitted()
        X = np.array([fp.vector() for fp in fingerprints]).reshape(-1, len(FEATURE_KEYS))
        return np.asarray((X - self.mean_) / self.scale_)

    def centroids(self) -> np.ndarray:
        return np.array([c.centroid for c in self.clusters_])

    def member_vectors(self) -> np.ndarray:
        """The known models' standardised vectors, in ``members_`` order."""
        return np.asarray((np.array([m.features for m in self.members_]) - self.mean_) / self.scale_)

    def cluster_of(self) -> dict[str, str]:
        """Member name -> cluster name."""
        return {m.name: m.cluster for m in self.members_}

    def known_set(self) -> KnownSet:
        """The known models as the rules read them."""
        self._check_fitted()
        index = {c.name: i for i, c in enumerate(self.clusters_)}
        return KnownSet(np.array([m.features for m in self.members_]), self.member_vectors(),
                        tuple(m.base for m in self.members_),
                        np.array([m.is_center for m in self.members_], dtype=bool),
                        np.array([index[m.cluster] for m in self.members_], dtype=int),
                        self.centroids(), int(self.n_neighbors))

    def family_of(self, base: str) -> str | None:
        """The family labelled most often among the known models of ``base`` (None if none is)."""
        counts = Counter(m.family for m in self.members_ if m.base == base and m.family)
        return counts.most_common(1)[0][0] if counts else None

    # ---- prediction ----------------------------------------------------------------------------

    def threshold_for(self, threshold: float | None = None) -> float:
        """The unknown-model threshold ``predict`` uses: ``threshold``, or the rule's default."""
        self._check_fitted()
        rule = self._validated()[1]
        if threshold is not None:
            finite_option("threshold", threshold, positive=True)
        limit = self.thresholds_[rule] if threshold is None else float(threshold)
        if limit <= 0:
            raise OptionError("threshold", None, f"{RULES[rule].needs}, so the known set gives no "
                              f"{rule} threshold: pass one")
        return limit

    def predict(self, fingerprints: Sequence[Fingerprint], *,
                threshold: float | None = None) -> tuple[UnknownPrediction, ...]:
        """The base model of each fingerprint under ``rule``, or ``unknown`` beyond ``threshold``
        (default: the rule's threshold learned by ``fit``)."""
        limit = self.threshold_for(threshold)
        spec = RULES[Rule(self.rule)]
        known = self.known_set()
        Z = self.transform(fingerprints)
        return tuple(self._predict_one(fp.model_name, spec, known, to_models, to_centroids, limit)
                     for fp, to_models, to_centroids in zip(
                         fingerprints, distances(Z, known.vectors), distances(Z, known.centroids),
                         strict=True))

    def _predict_one(self, model: str, spec: RuleSpec, known: KnownSet, to_models: np.ndarray,
                     to_centroids: np.ndarray, limit: float) -> UnknownPrediction:
        choice = spec.choose(known, to_models, to_centroids)

        def neighbor(i: int) -> Neighbor:
            m = self.members_[i]
            return Neighbor(m.name, m.base, m.cluster, float(to_models[i]))

        index = {m.name: i for i, m in enumerate(self.members_)}
        centers = [index[name] for name in self.centers_]
        nearest = np.argsort(to_models, kind="stable")[:SHOWN_NEIGHBOURS]
        c = int(np.argmin(to_centroids))
        return UnknownPrediction(
            model, spec.rule, choice.base if choice.distance <= limit else UNKNOWN, choice.base,
            self.family_of(choice.base), choice.confidence, choice.distance, limit,
            tuple(neighbor(int(i)) for i in nearest),
            neighbor(centers[int(np.argmin(to_models[centers]))]), self.clusters_[c].name,
            {cl.name: float(d) for cl, d in zip(self.clusters_, to_centroids, strict=True)},
            {self.members_[i].name: float(to_models[i]) for i in centers})

    # ---- evaluation ----------------------------------------------------------------------------

    def evaluate(self, labels: Mapping[str, Label]) -> Evaluation:
        """Share of labelled members that sit in the cluster of their base model, and purity."""
        self._check_fitted()
        where = self.cluster_of()
        base = {m: lab.base_model for m, lab in labels.items()}
        return evaluate(where, {m: where.get(b) for m, b in base.items()}, base)

    def evaluate_predictions(self, predictions: Sequence[UnknownPrediction],
                             labels: Mapping[str, Label]) -> Evaluation:
        """Right when the verdict is the labelled base model, or ``unknown`` for a base that no
        known model carries."""
        self._check_fitted()
        known = {m.base for m in self.members_}
        base = {m: lab.base_model for m, lab in labels.items()}
        return evaluate({p.model: p.verdict for p in predictions},
                        {m: b if b in known else UNKNOWN for m, b in base.items()}, base)

    # ---- clusters.json -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as plain JSON values (what ``save`` writes, and ``--json`` shows)."""
        self._check_fitted()
        from tensorguard.report import to_jsonable

        return {
            "schema": SCHEMA, "tensorguard_version": __version__,
            "method": Method(self.method).value, "k": self.k, "rule": Rule(self.rule).value,
            "random_state": self.random_state, "n_neighbors": self.n_neighbors,
            "feature_keys": list(FEATURE_KEYS),
            "scaler_mean": self.mean_.tolist(), "scaler_scale": self.scale_.tolist(),
            "centers": list(self.centers_), "thresholds": to_jsonable(self.thresholds_),
            "silhouette": self.silhouette_,
            "clusters": to_jsonable(self.clusters_), "members": to_jsonable(self.members_),
        }

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write ``clusters.json`` atomically (deterministic bytes)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n",
                                 force=force)

    @classmethod
    def load(cls, path: str | Path) -> FamilyClassifier:
        """Read a ``clusters.json`` written by ``save``; one-line errors for anything else."""
        path = Path(path)
        text = read_text_file(path, "clusters file")
        try:
            data = json.loads(text, parse_constant=_not_finite, parse_float=_finite_float)
        except RecursionError:
            raise TensorguardError(f"{path}: not a clusters file (JSON nested too deeply)") from None
        except ValueError as exc:  # JSONDecodeError, a non-finite number, an endless integer
            raise TensorguardError(f"{path}: not a clusters file ({exc})") from None
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema in OLD_SCHEMAS:
            raise TensorguardError(
                f"{path}: schema {schema!r} was written by an older tensorguard and lacks what "
                f"prediction now needs; run 'tensorguard cluster ... --save' again to write {SCHEMA!r}")
        if schema != SCHEMA:
            raise TensorguardError(f"{path}: schema {schema!r} is not {SCHEMA!r}")
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise TensorguardError(f"{path}: not a valid {SCHEMA} clusters file ({exc})") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> FamilyClassifier:
        if tuple(data["feature_keys"]) != FEATURE_KEYS:
            raise ValueError("feature_keys differ from this tensorguard's 14 features")
        clf = cls(centers=tuple(_texts(data["centers"])), method=Method(data["method"]),
                  k=None if data["k"] is None else _whole(data["k"]), rule=Rule(data["rule"]),
                  n_neighbors=_whole(data["n_neighbors"]), random_state=_whole(data["random_state"]))
        clf._validated()
        clf.mean_, clf.scale_ = _vector(data["scaler_mean"]), _vector(data["scaler_scale"])
        if not (clf.scale_ > 0).all():
            raise ValueError("scaler_scale must be positive")
        clf.clusters_ = tuple(Cluster(_text(c["name"]), tuple(_texts(c["centers"])),
                                      tuple(_texts(c["members"])), tuple(_vector(c["centroid"])))
                              for c in _list(data["clusters"]))
        clf.members_ = tuple(Member(_text(m["name"]), _text(m["cluster"]), _flag(m["is_center"]),
                                    _text(m["base"]), _optional_text(m["family"]),
                                    BaseSource(m["base_source"]), _number(m["distance"]),
                                    tuple(_vector(m["features"]))) for m in _list(data["members"]))
        clf.centers_ = tuple(clf.centers)
        clf.thresholds_ = {rule: _number(data["thresholds"][rule.value]) for rule in RULES}
        _require(min(clf.thresholds_.values()) >= 0, "a threshold is negative")
        clf.silhouette_ = None if data["silhouette"] is None else _number(data["silhouette"])
        _check_consistent(clf)
        return clf


#: Older files: /1 lacks what prediction needs, /2 the ``k`` and ``rule`` it was fitted with.
OLD_SCHEMAS = ("tensorguard.clusters/1", "tensorguard.clusters/2")


class _NonFinite(ValueError):
    pass


def _not_finite(text: str) -> float:
    raise _NonFinite(f"non-finite number {text} (not allowed)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _not_finite(text)
    return value


def _require(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(problem)


def _list(value: Any) -> list[Any]:
    _require(isinstance(value, list), f"expected a list, found {value!r:.40}")
    return list(value)


def _flag(value: Any) -> bool:
    _require(isinstance(value, bool), f"expected true or false, found {value!r:.40}")
    return bool(value)


def _whole(value: Any) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool),
             f"expected a whole number, found {value!r:.40}")
    return int(value)


def _text(value: Any) -> str:
    _require(isinstance(value, str) and bool(value), f"expected a name, found {value!r:.40}")
    return str(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _texts(value: Any) -> list[str]:
    return [_text(v) for v in _list(value)]


def _number(value: Any) -> float:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool),
             f"expected a number, found {value!r:.40}")
    return float(value)


def _vector(value: Any) -> np.ndarray:
    out = np.array([_number(v) for v in _list(value)], dtype=np.float64)
    _require(len(out) == len(FEATURE_KEYS) and bool(np.isfinite(out).all()),
             f"expected {len(FEATURE_KEYS)} finite numbers, found {len(out)}")
    return out


def _check_consistent(clf: FamilyClassifier) -> None:
    """Clusters, members and centers must name each other consistently."""
    members = {m.name: m for m in clf.members_}
    clusters = {c.name: c for c in clf.clusters_}
    _require(bool(members) and bool(clusters) and bool(clf.centers_), "no members, clusters or centers")
    _require(len(members) == len(clf.members_) and len(clusters) == len(clf.clusters_),
             "a member or cluster name appears twice")
    for c in clf.centers_:
        _require(c in members and members[c].is_center, f"center {c!r} is not a center member")
    _require({m.name for m in clf.members_ if m.is_center} == set(clf.centers_),
             "members marked as centers differ from the centers")
    for m in clf.members_:
        _require(m.cluster in clusters, f"member {m.name!r} is in unknown cluster {m.cluster!r}")
    for cl in clf.clusters_:
        _require(set(cl.members) == {m.name for m in clf.members_ if m.cluster == cl.name},
                 f"cluster {cl.name!r} lists members that are not in it")
        _require(set(cl.centers) == {n for n in cl.members if members[n].is_center},
                 f"cluster {cl.name!r} lists centers that are not its center members")
