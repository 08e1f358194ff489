"""``tensorguard cluster`` and ``predict``: fingerprint files in, ``clusters.json``, figures and
text reports out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tensorguard.clustering import (
    RULES,
    UNKNOWN,
    Evaluation,
    FamilyClassifier,
    Method,
    Rule,
    UnknownPrediction,
    Validation,
    validate,
)
from tensorguard.errors import UsageError
from tensorguard.fingerprints import load_fingerprints
from tensorguard.outputs import check_writable
from tensorguard.reference import LABELS_FILE, Label, bundled_dir, load_labels
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
    """``tensorguard predict``: one prediction per fingerprint under one rule, optionally scored
    against labels, and optionally the leave-one-out validation of every rule on the known set."""

    clusters: str  # where the classifier came from
    known_models: int
    rule: Rule
    answer: str  # what the rule answers with
    distance: str  # what its distance measures
    threshold: float
    threshold_rule: str
    predictions: tuple[UnknownPrediction, ...]
    evaluation: Evaluation | None = None
    validation: Validation | None = None
    plots: tuple[Path, ...] = ()


def parse_centers(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [c.strip() for c in text.split(",") if c.strip()]


def _inputs(paths: Sequence[str | Path]) -> list[str | Path]:
    return list(paths) if paths else [bundled_dir()]


def _labels(paths: Sequence[str | Path], labels: str | Path | None) -> dict[str, Label] | None:
    """The labels given, or the bundled set's own when the bundled set is the input."""
    if labels is None and not paths:
        labels = bundled_dir() / LABELS_FILE
    return load_labels(labels) if labels is not None else None


def cluster_files(features: Sequence[str | Path], *, centers: Sequence[str], k: int | None = None,
                  method: Method | str = Method.KMEANS, random_state: int = 0,
                  labels: str | Path | None = None, save_to: str | Path | None = None,
                  plot: str | Path | None = None, force: bool = False) -> ClusterReport:
    """Fit on fingerprint files (default: the bundled set, with its own labels) with ``labels`` as
    the known models' bases, evaluate the clusters against them, save, plot (only when asked)."""
    from tensorguard.plots import save_png

    for out in (save_to, plot):
        if out is not None:
            check_writable(Path(out), force=force)
    label_map = _labels(features, labels)
    clf = FamilyClassifier(centers=centers, k=k, method=method, random_state=random_state)
    clf.fit(load_fingerprints(_inputs(features)), label_map)
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
                  rule: Rule | str = Rule.NEIGHBORS, threshold: float | None = None,
                  labels: str | Path | None = None, evaluate: bool = False,
                  plot: str | Path | None = None, force: bool = False) -> PredictReport:
    """Predict the base model of fingerprints against a saved ``clusters.json``, or against a
    classifier fitted here on ``features`` (default: the bundled set) around ``centers``, with
    ``labels`` as the known models' bases; unknowns whose model name is in that set are held out
    of it. ``labels`` also scores the predictions; ``evaluate`` validates every rule on the known
    set; ``plot`` is a folder for one figure per prediction (none unless asked)."""
    from tensorguard.plots import save_png

    if (clusters is None) == (not centers):
        raise UsageError("predict needs either {clusters} or {centers} (not both)", "clusters",
                         "centers")
    if clusters is not None and features:
        raise UsageError("{features} is for {centers}; a clusters file already holds its set",
                         "features", "centers")
    if not unknowns and not evaluate:
        raise UsageError("give fingerprint files to predict, or ask for {evaluate}", "evaluate")
    fps = load_fingerprints(unknowns) if unknowns else []
    paths = [prediction_plot_path(plot, fp.model_name) for fp in fps] if plot is not None else []
    for p in paths:
        check_writable(p, force=force)
    label_map = (load_labels(labels) if labels is not None else None) if clusters is not None \
        else _labels(features, labels)
    if clusters is not None:
        clf, source = FamilyClassifier.load(clusters), str(clusters)
    else:
        held_out = {fp.model_name for fp in fps}
        known = [fp for fp in load_fingerprints(_inputs(features)) if fp.model_name not in held_out]
        clf = FamilyClassifier(centers=centers, k=k, method=method, random_state=random_state)
        clf.fit(known, label_map)
        source = f"{method} fitted on {len(known)} fingerprints around {len(centers)} centers"
    clf.set_params(rule=rule)
    limit = clf.threshold_for(threshold)
    preds = clf.predict(fps, threshold=threshold) if fps else ()
    drawn: tuple[Path, ...] = ()
    if paths:
        from tensorguard.plots.clusters import prediction_figure

        drawn = tuple(save_png(prediction_figure(clf, p, z), path, force=force)
                      for p, z, path in zip(preds, clf.transform(fps), paths, strict=True))
    spec = RULES[Rule(rule)]
    return PredictReport(
        source, len(clf.members_), spec.rule, spec.answer.format(k=clf.n_neighbors), spec.distance,
        limit, spec.threshold_rule if threshold is None else "given", preds,
        clf.evaluate_predictions(preds, label_map) if label_map and preds else None,
        validate(clf) if evaluate else None, drawn)


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


def _thresholds_text(m: FamilyClassifier) -> list[str]:
    lines = ["", "Unknown-model thresholds (predict --rule):"]
    rows = [[str(rule), m.thresholds_[rule] or "none", spec.threshold_rule] for rule, spec in RULES.items()]
    return lines + ["  " + line for line in table(["rule", "threshold", "how"], rows).splitlines()]


def render_cluster_text(report: ClusterReport) -> str:
    """The text report of ``tensorguard cluster``."""
    m = report.model
    sil = "-" if m.silhouette_ is None else f"{m.silhouette_:.3f}"
    lines = [f"{len(m.members_)} models, {len(m.clusters_)} clusters ({m.method}), silhouette {sil}"]
    dist = {x.name: x for x in m.members_}
    for c in m.clusters_:
        lines += ["", f"{c.name}  ({len(c.members)} models)"
                      + (f"  [holds {len(c.centers)} centers]" if len(c.centers) > 1 else "")]
        rows = [[("* " if dist[n].is_center else "  ") + n, dist[n].base, dist[n].distance]
                for n in sorted(c.members, key=lambda n: (dist[n].distance, n))]
        lines += ["  " + line for line in table(["model (* center)", "base", "distance"], rows).splitlines()]
    sources = Counter(x.base_source for x in m.members_)
    lines.append("\nBase models: " + ", ".join(f"{n} from {s}" for s, n in sorted(sources.items())))
    lines += _thresholds_text(m)
    if report.evaluation is not None:
        lines += _evaluation_text(report.evaluation, "models in the cluster of their base model")
    for label, path in (("Saved", report.saved), ("Plot", report.plot)):
        if path is not None:
            lines.append(f"{label}: {path}")
    return "\n".join(lines) + "\n"


def _prediction_text(p: UnknownPrediction) -> list[str]:
    if p.verdict == UNKNOWN:
        head = (f"UNKNOWN (best guess {p.base} at {fmt(p.distance)} > threshold {fmt(p.threshold)}: "
                "likely a new family, or heavily modified)")
    else:
        extra = [f"family {p.family}"] if p.family else []
        extra += [f"confidence {p.confidence:.0%}"] if p.confidence is not None else []
        extra.append(f"distance {fmt(p.distance)} <= threshold {fmt(p.threshold)}")
        head = f"{p.verdict} ({'; '.join(extra)})"
    rows = [[n.model, n.base, n.distance] for n in p.neighbors]
    c = p.nearest_center
    return (["", f"{p.model}: {head}", "  nearest known models:"]
            + ["    " + line for line in table(["model", "base", "distance"], rows).splitlines()]
            + [f"  nearest center model: {c.model} ({fmt(c.distance)}); nearest cluster: "
               f"{p.nearest_cluster} ({fmt(p.cluster_distances[p.nearest_cluster])})"])


def _validation_text(v: Validation) -> list[str]:
    lines = ["", f"Which rule to trust: each of the {v.evaluated} non-center known models held out in "
                 f"turn, the rest refitted (bases: {v.truth_from_labels} from labels, "
                 f"{v.evaluated - v.truth_from_labels} from the clustering; each rule with its own "
                 "default threshold)"]
    rows = [[str(s.rule), s.right, s.evaluated, s.unknown, "-" if s.accuracy is None else f"{s.accuracy:.1%}"]
            for s in v.leave_one_out]
    heads = ["rule", "right", "of", "unknown", "accuracy"]
    lines += ["  " + line for line in table(heads, rows).splitlines()]
    lines += [f"  {s.rule} missed: {x.model} -> {x.answer} (base {x.truth})"
              for s in v.leave_one_out for x in s.misses]
    if v.families:
        lines += ["", "Each family held out of the known set (its models should come out unknown):"]
        rules = list(RULES)
        rows = [[f.family, len(f.models), *(f.unknown[r] for r in rules),
                 float(np.median(f.nearest_known)), f.threshold] for f in v.families]
        heads = ["family", "models", *(f"{r} unknown" for r in rules), "nearest known (median)",
                 "neighbors threshold"]
        lines += ["  " + line for line in table(heads, rows).splitlines()]
    if v.sibling_distances:
        d = np.array(v.sibling_distances)
        lines.append(f"  for comparison, known models held out are this far from the nearest model of "
                     f"their own base: median {fmt(float(np.median(d)))}, 90th percentile "
                     f"{fmt(float(np.quantile(d, 0.9)))}, largest {fmt(float(d.max()))}")
    return lines


def render_predict_text(report: PredictReport) -> str:
    """The text report of ``tensorguard predict``."""
    lines = [f"Known set: {report.clusters} ({report.known_models} models)",
             f"Rule {report.rule}: {report.answer}; unknown when the distance {report.distance} "
             f"exceeds {fmt(report.threshold)} ({report.threshold_rule})"]
    for p in report.predictions:
        lines += _prediction_text(p)
    if report.evaluation is not None:
        lines += _evaluation_text(report.evaluation, "predictions right")
    if report.validation is not None:
        lines += _validation_text(report.validation)
    lines += [f"Plot: {p}" for p in report.plots]
    return "\n".join(lines) + "\n"
