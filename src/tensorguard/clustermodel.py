"""Family clustering of fingerprints and unknown-model prediction, and their ``clusters.json``.

``fit`` clusters fingerprints around named center models (maths in ``tensorguard.clustering``)
into a ``ClusterModel``: everything ``predict`` needs (feature order, scaler, centroids, members'
standardised vectors, centers, threshold), so prediction never re-reads the clustering set.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorguard import __version__, clustering
from tensorguard.errors import TensorguardError
from tensorguard.features import FEATURE_KEYS, Fingerprint, load_fingerprints
from tensorguard.outputs import check_writable, write_text_atomic
from tensorguard.reference import Label, bundled_dir, load_labels
from tensorguard.report import fmt, table, to_jsonable

SCHEMA = "tensorguard.clusters/1"
#: The paper's 8 center models of the bundled reference set.
PAPER_CENTERS = ("gemma-3-4b-it", "Llama-3.1-8B", "llama-3.2-1b", "Llama-3.2-3B", "Mistral-7B-v0.1",
                 "phi-4", "Qwen2.5-3B", "Qwen2.5-7B-Instruct")


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
    """One cluster: named after the center(s) it holds, or ``cluster-N``."""

    name: str
    centers: tuple[str, ...]
    members: tuple[str, ...]
    centroid: tuple[float, ...]


@dataclass(frozen=True)
class ClusterModel:
    """A fitted family clustering, as saved in ``clusters.json``."""

    method: str
    random_state: int
    feature_keys: tuple[str, ...]
    scaler_mean: tuple[float, ...]
    scaler_scale: tuple[float, ...]
    centers: tuple[str, ...]
    threshold: float
    threshold_rule: str
    silhouette: float | None
    clusters: tuple[Cluster, ...]
    members: tuple[Member, ...]
    schema: str = SCHEMA
    tensorguard_version: str = __version__

    def standardise(self, fingerprints: Sequence[Fingerprint]) -> np.ndarray:
        """The fingerprints' 14 features in this model's standardised space."""
        scaler = clustering.Scaler(np.array(self.scaler_mean), np.array(self.scaler_scale))
        return scaler.transform(np.array([fp.vector() for fp in fingerprints]))

    def centroids(self) -> np.ndarray:
        return np.array([c.centroid for c in self.clusters])

    def member_vectors(self) -> np.ndarray:
        return np.array([m.vector for m in self.members])

    def cluster_of(self) -> dict[str, str]:
        """Member name -> cluster name."""
        return {m.name: m.cluster for m in self.members}


def _center_indices(names: Sequence[str], centers: Sequence[str]) -> list[int]:
    if not centers:
        raise TensorguardError("--centers: name at least one center model")
    index = {n: i for i, n in enumerate(names)}
    out = []
    for c in centers:
        if c not in index:
            close = difflib.get_close_matches(c, names, n=3, cutoff=0.3)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise TensorguardError(f"center {c!r} matches no fingerprint{hint}")
        if index[c] in out:
            raise TensorguardError(f"center {c!r} is named twice in --centers")
        out.append(index[c])
    return out


def fit(fingerprints: Sequence[Fingerprint], centers: Sequence[str], k: int | None = None,
        method: str = "kmeans", random_state: int = 0) -> ClusterModel:
    """Cluster ``fingerprints`` with K-Means (or GMM) started at the ``centers`` models."""
    names = [fp.model_name for fp in fingerprints]
    center_idx = _center_indices(names, centers)
    X = np.array([fp.vector() for fp in fingerprints])
    scaler = clustering.Scaler.fit(X)
    Z = scaler.transform(X)
    est = clustering.CenteredKMeans(k, method, random_state).fit(Z, center_idx)
    labels, centroids = est.labels_, est.cluster_centers_
    cluster_names = clustering.name_clusters(labels, center_idx, names, len(centroids))
    dist = clustering.member_distances(Z, labels, centroids)
    clusters = tuple(
        Cluster(cluster_names[c], tuple(names[i] for i in center_idx if labels[i] == c),
                tuple(n for n, lab in zip(names, labels) if lab == c), tuple(centroids[c].tolist()))
        for c in range(len(centroids)))
    members = tuple(Member(n, cluster_names[labels[i]], i in center_idx, float(dist[i]),
                           tuple(Z[i].tolist())) for i, n in enumerate(names))
    return ClusterModel(method, random_state, FEATURE_KEYS, tuple(scaler.mean.tolist()),
                        tuple(scaler.scale.tolist()), tuple(centers),
                        clustering.default_threshold(dist), clustering.THRESHOLD_RULE,
                        clustering.silhouette(Z, labels), clusters, members)


def evaluate(model: ClusterModel, labels: Mapping[str, Label]) -> clustering.Evaluation:
    """Share of labelled members that sit in the cluster of their base model, and purity."""
    where = model.cluster_of()
    base = {m: lab.base_model for m, lab in labels.items()}
    return clustering.evaluate(where, {m: where.get(b) for m, b in base.items()}, base)


# ---- clusters.json ------------------------------------------------------------------------------

def save(model: ClusterModel, path: str | Path, force: bool = False) -> Path:
    """Write ``clusters.json`` atomically (deterministic bytes), ``schema`` first."""
    data = to_jsonable(model)
    data = {"schema": data.pop("schema"), "tensorguard_version": data.pop("tensorguard_version"), **data}
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n", force)


def _parse(data: Any) -> ClusterModel:
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != SCHEMA:
        raise ValueError(f"schema {schema!r} is not {SCHEMA!r}")
    if tuple(data["feature_keys"]) != FEATURE_KEYS:
        raise ValueError("feature_keys differ from this tensorguard's 14 features")
    clusters = tuple(Cluster(c["name"], tuple(c["centers"]), tuple(c["members"]),
                             tuple(map(float, c["centroid"]))) for c in data["clusters"])
    members = tuple(Member(m["name"], m["cluster"], bool(m["is_center"]), float(m["distance"]),
                           tuple(map(float, m["vector"]))) for m in data["members"])
    dims = {len(data["scaler_mean"]), len(data["scaler_scale"]),
            *(len(c.centroid) for c in clusters), *(len(m.vector) for m in members)}
    if dims != {len(FEATURE_KEYS)} or not clusters or not members:
        raise ValueError("vectors of the wrong length, or no clusters or members")
    return ClusterModel(
        data["method"], int(data["random_state"]), FEATURE_KEYS,
        tuple(map(float, data["scaler_mean"])), tuple(map(float, data["scaler_scale"])),
        tuple(data["centers"]), float(data["threshold"]), str(data["threshold_rule"]),
        None if data["silhouette"] is None else float(data["silhouette"]), clusters, members,
        SCHEMA, str(data.get("tensorguard_version", "")))


def load(path: str | Path) -> ClusterModel:
    """Read a ``clusters.json`` written by ``save``; one-line errors for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TensorguardError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorguardError(f"{path}: not a clusters file ({exc})") from None
    try:
        return _parse(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TensorguardError(f"{path}: not a {SCHEMA} clusters file ({exc})") from None


# ---- prediction ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Neighbour:
    """A known model near an unknown one."""

    model: str
    cluster: str
    distance: float


@dataclass(frozen=True)
class UnknownPrediction:
    """Verdict for one unknown fingerprint: a cluster name, or ``unknown`` beyond the threshold."""

    model: str
    verdict: str
    nearest_cluster: str
    distance: float
    threshold: float
    cluster_distances: dict[str, float]
    center_distances: dict[str, float]
    nearest_models: tuple[Neighbour, ...]


@dataclass(frozen=True)
class PredictReport:
    """``tensorguard predict``: one prediction per unknown, optionally scored against labels."""

    clusters: str  # where the cluster model came from
    threshold: float
    threshold_rule: str
    predictions: tuple[UnknownPrediction, ...]
    evaluation: clustering.Evaluation | None = None
    plots: tuple[Path, ...] = ()


def predict(model: ClusterModel, unknowns: Sequence[Fingerprint],
            threshold: float | None = None) -> tuple[UnknownPrediction, ...]:
    """Nearest cluster of each unknown in the model's standardised space, and its verdict."""
    if threshold is not None and threshold <= 0:
        raise TensorguardError(f"--threshold {threshold}: must be positive")
    limit = model.threshold if threshold is None else threshold
    if limit <= 0:
        raise TensorguardError("every cluster is a single model, so the clustering set gives no "
                               "threshold; pass --threshold")
    centroids, members = model.centroids(), model.member_vectors()
    out = []
    for fp, z in zip(unknowns, model.standardise(unknowns)):
        p = clustering.predict_one(z, centroids, members, limit)
        name = model.clusters[p.cluster].name
        order = np.argsort(p.model_distances, kind="stable")[:3]
        centers = {m.name: float(d) for m, d in zip(model.members, p.model_distances) if m.is_center}
        out.append(UnknownPrediction(
            fp.model_name, name if p.known else clustering.UNKNOWN, name, p.distance, limit,
            {c.name: float(d) for c, d in zip(model.clusters, p.centroid_distances)},
            {c: centers[c] for c in model.centers},
            tuple(Neighbour(model.members[i].name, model.members[i].cluster,
                            float(p.model_distances[i])) for i in order)))
    return tuple(out)


def evaluate_predictions(model: ClusterModel, predictions: Sequence[UnknownPrediction],
                         labels: Mapping[str, Label]) -> clustering.Evaluation:
    """Right when the verdict is the cluster of the base model, or ``unknown`` for a base not in it."""
    where = model.cluster_of()
    base = {m: lab.base_model for m, lab in labels.items()}
    return clustering.evaluate({p.model: p.verdict for p in predictions},
                               {m: where.get(b, clustering.UNKNOWN) for m, b in base.items()}, base)


# ---- text reports -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterReport:
    """``tensorguard cluster``: the fitted model, its evaluation and the files written."""

    model: ClusterModel
    evaluation: clustering.Evaluation | None = None
    saved: Path | None = None
    plot: Path | None = None


def _evaluation_text(ev: clustering.Evaluation, what: str) -> list[str]:
    if ev.accuracy is None:
        return ["", "Evaluation: no labelled model to score"]
    lines = ["", f"Evaluation against labels: {ev.correct}/{ev.evaluated} {what} "
                 f"(accuracy {ev.accuracy:.1%}, purity {ev.purity:.1%})"]
    lines += [f"  misassigned: {m.model} -> {m.assigned} (base {m.base_model}, expected {m.expected})"
              for m in ev.misassigned]
    if ev.unlabelled:
        lines.append(f"  not scored (no label, or base not in the clustering set): {len(ev.unlabelled)}")
    return lines


def render_cluster_text(report: ClusterReport) -> str:
    """The text report of ``tensorguard cluster``."""
    m = report.model
    sil = "-" if m.silhouette is None else f"{m.silhouette:.3f}"
    lines = [f"{len(m.members)} models, {len(m.clusters)} clusters ({m.method}), silhouette {sil}"]
    dist = {x.name: x for x in m.members}
    for c in m.clusters:
        lines += ["", f"{c.name}  ({len(c.members)} models)"
                      + (f"  [holds {len(c.centers)} centers]" if len(c.centers) > 1 else "")]
        rows = [[("* " if dist[n].is_center else "  ") + n, dist[n].distance]
                for n in sorted(c.members, key=lambda n: (dist[n].distance, n))]
        lines += ["  " + line for line in table(["model (* center)", "distance"], rows).splitlines()]
    lines.append(f"\nUnknown-model threshold: {fmt(m.threshold)} ({m.threshold_rule})")
    if report.evaluation is not None:
        lines += _evaluation_text(report.evaluation, "models in the cluster of their base model")
    for label, path in (("Saved", report.saved), ("Plot", report.plot)):
        if path is not None:
            lines.append(f"{label}: {path}")
    return "\n".join(lines) + "\n"


def render_predict_text(report: PredictReport) -> str:
    """The text report of ``tensorguard predict``."""
    lines = [f"Clusters: {report.clusters}; threshold {fmt(report.threshold)}"]
    for p in report.predictions:
        verdict = (f"UNKNOWN (nearest cluster {p.nearest_cluster} at {fmt(p.distance)} > "
                   f"threshold {fmt(p.threshold)}: likely a new family, or heavily modified)"
                   if p.verdict == clustering.UNKNOWN else
                   f"{p.verdict} (distance {fmt(p.distance)} <= threshold {fmt(p.threshold)})")
        lines += ["", f"{p.model}: {verdict}"]
        rows = [[c, d] for c, d in sorted(p.cluster_distances.items(), key=lambda x: (x[1], x[0]))]
        lines += ["  " + s for s in table(["cluster", "distance"], rows).splitlines()]
        lines.append("  nearest known models: " + ", ".join(
            f"{n.model} ({n.cluster}, {fmt(n.distance)})" for n in p.nearest_models))
    if report.evaluation is not None:
        lines += _evaluation_text(report.evaluation, "predictions right")
    lines += [f"Plot: {p}" for p in report.plots]
    return "\n".join(lines) + "\n"



# ---- files in, files out (what the CLI calls) ---------------------------------------------------

def parse_centers(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [c.strip() for c in text.split(",") if c.strip()]


def _inputs(paths: Sequence[str | Path]) -> list[Path | str]:
    return list(paths) if paths else [bundled_dir()]


def cluster_files(features: Sequence[str | Path], centers: Sequence[str], k: int | None = None,
                  method: str = "kmeans", random_state: int = 0, labels: str | Path | None = None,
                  save_to: str | Path | None = None, plot: str | Path | None = None,
                  force: bool = False) -> ClusterReport:
    """``tensorguard cluster``: fit on fingerprint files (default: the bundled set), save, plot."""
    for out in (save_to, plot):
        if out is not None:
            check_writable(Path(out), force)
    label_map = load_labels(labels) if labels is not None else None
    model = fit(load_fingerprints(_inputs(features)), centers, k, method, random_state)
    saved = save(model, save_to, force) if save_to is not None else None
    drawn = None
    if plot is not None:
        from tensorguard.plots.clusters import plot_clusters

        drawn = plot_clusters(model, plot, force)
    return ClusterReport(model, evaluate(model, label_map) if label_map else None, saved, drawn)


def prediction_plot_path(directory: str | Path, model_name: str) -> Path:
    """``DIR/unknown_model_prediction_<name>.png``."""
    return Path(directory) / f"unknown_model_prediction_{model_name.replace('/', '_')}.png"


def predict_files(unknowns: Sequence[str | Path], clusters: str | Path | None = None,
                  features: Sequence[str | Path] = (), centers: Sequence[str] = (),
                  k: int | None = None, method: str = "kmeans", random_state: int = 0,
                  threshold: float | None = None, labels: str | Path | None = None,
                  plot_dir: str | Path | None = None, force: bool = False) -> PredictReport:
    """``tensorguard predict``: unknown fingerprints against a saved ``clusters.json``, or against a
    clustering fitted here on ``features`` (default: the bundled set) around ``centers``.

    When fitting here, unknowns whose model name is in the clustering set are held out of it.
    """
    if (clusters is None) == (not centers):
        raise TensorguardError("predict needs either --clusters FILE or --centers NAME,... (not both)")
    if clusters is not None and features:
        raise TensorguardError("--features is for --centers; a --clusters file already holds its set")
    fps = load_fingerprints(unknowns)
    paths = [prediction_plot_path(plot_dir, fp.model_name) for fp in fps] if plot_dir is not None else []
    for p in paths:
        check_writable(p, force)
    label_map = load_labels(labels) if labels is not None else None
    if clusters is not None:
        model, source = load(clusters), str(clusters)
    else:
        held_out = {fp.model_name for fp in fps}
        known = [fp for fp in load_fingerprints(_inputs(features)) if fp.model_name not in held_out]
        model = fit(known, centers, k, method, random_state)
        source = f"{method} fitted on {len(known)} fingerprints around {len(centers)} centers"
    preds = predict(model, fps, threshold)
    drawn: tuple[Path, ...] = ()
    if paths:
        from tensorguard.plots.clusters import plot_prediction

        drawn = tuple(plot_prediction(model, p, z, path, force)
                      for p, z, path in zip(preds, model.standardise(fps), paths))
    ev = evaluate_predictions(model, preds, label_map) if label_map else None
    return PredictReport(source, preds[0].threshold, model.threshold_rule if threshold is None
                         else "given with --threshold", preds, ev, drawn)
