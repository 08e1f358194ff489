"""``tensorguard cluster`` and ``predict``: fingerprint files in, ``clusters.json``, figures and
text reports out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tensorguard.clustering import UNKNOWN, Evaluation, FamilyClassifier, UnknownPrediction
from tensorguard.clustering.kmeans import Method
from tensorguard.errors import UsageError
from tensorguard.fingerprints import load_fingerprints
from tensorguard.outputs import check_writable
from tensorguard.reference import bundled_dir, load_labels
from tensorguard.report import fmt, table


@dataclass(frozen=True)
class ClusterReport:
    """``tensorguard cluster``: the fitted classifier, its evaluation and the files written."""

    model: FamilyClassifier
    evaluation: Evaluation | None = None
    saved: Path | None = None
    plot: Path | None = None


@dataclass(frozen=True)
class PredictReport:
    """``tensorguard predict``: one prediction per fingerprint, optionally scored against labels."""

    clusters: str  # where the classifier came from
    threshold: float
    threshold_rule: str
    predictions: tuple[UnknownPrediction, ...]
    evaluation: Evaluation | None = None
    plots: tuple[Path, ...] = ()


def parse_centers(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [c.strip() for c in text.split(",") if c.strip()]


def _inputs(paths: Sequence[str | Path]) -> list[str | Path]:
    return list(paths) if paths else [bundled_dir()]


def cluster_files(features: Sequence[str | Path], *, centers: Sequence[str], k: int | None = None,
                  method: Method | str = Method.KMEANS, random_state: int = 0,
                  labels: str | Path | None = None, save_to: str | Path | None = None,
                  plot: str | Path | None = None, force: bool = False) -> ClusterReport:
    """Fit on fingerprint files (default: the bundled set), evaluate, save, plot."""
    from tensorguard.plots import save_png

    for out in (save_to, plot):
        if out is not None:
            check_writable(Path(out), force=force)
    label_map = load_labels(labels) if labels is not None else None
    clf = FamilyClassifier(centers=centers, k=k, method=method, random_state=random_state)
    clf.fit(load_fingerprints(_inputs(features)))
    saved = clf.save(save_to, force=force) if save_to is not None else None
    drawn = None
    if plot is not None:
        from tensorguard.plots.clusters import cluster_figure

        drawn = save_png(cluster_figure(clf), plot, force=force)
    return ClusterReport(clf, clf.evaluate(label_map) if label_map else None, saved, drawn)


def prediction_plot_path(directory: str | Path, model_name: str) -> Path:
    """``DIR/unknown_model_prediction_<name>.png``."""
    return Path(directory) / f"unknown_model_prediction_{model_name.replace('/', '_')}.png"


def predict_files(unknowns: Sequence[str | Path], *, clusters: str | Path | None = None,
                  features: Sequence[str | Path] = (), centers: Sequence[str] = (),
                  k: int | None = None, method: Method | str = Method.KMEANS, random_state: int = 0,
                  threshold: float | None = None, labels: str | Path | None = None,
                  plot_dir: str | Path | None = None, force: bool = False) -> PredictReport:
    """Predict fingerprints against a saved ``clusters.json``, or against a classifier fitted here
    on ``features`` (default: the bundled set) around ``centers``; unknowns whose model name is in
    that set are held out of it."""
    from tensorguard.plots import save_png

    if (clusters is None) == (not centers):
        raise UsageError("predict needs either {clusters} or {centers} (not both)", "clusters",
                         "centers")
    if clusters is not None and features:
        raise UsageError("{features} is for {centers}; a clusters file already holds its set",
                         "features", "centers")
    fps = load_fingerprints(unknowns)
    paths = [prediction_plot_path(plot_dir, fp.model_name) for fp in fps] if plot_dir is not None else []
    for p in paths:
        check_writable(p, force=force)
    label_map = load_labels(labels) if labels is not None else None
    if clusters is not None:
        clf, source = FamilyClassifier.load(clusters), str(clusters)
    else:
        held_out = {fp.model_name for fp in fps}
        known = [fp for fp in load_fingerprints(_inputs(features)) if fp.model_name not in held_out]
        clf = FamilyClassifier(centers=centers, k=k, method=method, random_state=random_state)
        clf.fit(known)
        source = f"{method} fitted on {len(known)} fingerprints around {len(centers)} centers"
    preds = clf.predict(fps, threshold=threshold)
    drawn: tuple[Path, ...] = ()
    if paths:
        from tensorguard.plots.clusters import prediction_figure

        drawn = tuple(save_png(prediction_figure(clf, p, z), path, force=force)
                      for p, z, path in zip(preds, clf.transform(fps), paths, strict=True))
    ev = clf.evaluate_predictions(preds, label_map) if label_map else None
    return PredictReport(source, preds[0].threshold, clf.threshold_rule_ if threshold is None
                         else "given with --threshold", preds, ev, drawn)


# ---- text reports -------------------------------------------------------------------------------

def _evaluation_text(ev: Evaluation, what: str) -> list[str]:
    if ev.accuracy is None or ev.purity is None:
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
    sil = "-" if m.silhouette_ is None else f"{m.silhouette_:.3f}"
    lines = [f"{len(m.members_)} models, {len(m.clusters_)} clusters ({m.method}), silhouette {sil}"]
    dist = {x.name: x for x in m.members_}
    for c in m.clusters_:
        lines += ["", f"{c.name}  ({len(c.members)} models)"
                      + (f"  [holds {len(c.centers)} centers]" if len(c.centers) > 1 else "")]
        rows = [[("* " if dist[n].is_center else "  ") + n, dist[n].distance]
                for n in sorted(c.members, key=lambda n: (dist[n].distance, n))]
        lines += ["  " + line for line in table(["model (* center)", "distance"], rows).splitlines()]
    lines.append(f"\nUnknown-model threshold: {fmt(m.threshold_)} ({m.threshold_rule_})")
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
                   if p.verdict == UNKNOWN else
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
