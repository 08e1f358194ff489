"""``tensorguard sensitivity``: analyse each model, write its JSON and chart together, and a
depth comparison figure for several models; the text report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tensorguard import report
from tensorguard.app.batch import Outcome, Status, name_collision, run_batch
from tensorguard.forward.perturb import STRENGTH
from tensorguard.forward.sequences import LENGTH
from tensorguard.loading import open_model
from tensorguard.outputs import check_writable, write_all
from tensorguard.sensitivity import (
    MEAN,
    Metric,
    Options,
    SeedMode,
    SensitivityResult,
    analyze,
    attention_contrast,
    findings,
)

COMPARISON_FILE = "sensitivity_comparison.png"


@dataclass(frozen=True)
class Failure:
    model: str
    error: str


@dataclass(frozen=True)
class SensitivityRun:
    """Results of a command over several models: what was computed, what failed, what was written."""

    results: list[SensitivityResult]
    failures: list[Failure]
    written: list[str]


def output_paths(directory: str | Path, model_name: str) -> tuple[Path, Path]:
    """``DIR/<name>_sensitivity.json`` and ``DIR/<name>_sensitivity.png``."""
    stem = model_name.replace("/", "_") + "_sensitivity"
    return Path(directory) / f"{stem}.json", Path(directory) / f"{stem}.png"


def analyze_models(models: Sequence[str], options: Options, *, out_dir: str | Path | None = None,
                   force: bool = False, base: str | None = None,
                   on_outcome: Callable[[Outcome[SensitivityResult]], None] | None = None) -> SensitivityRun:
    """Analyse each model; with ``out_dir``, write its JSON and chart (and, for several, the
    comparison figure) there, otherwise nothing. ``base`` is the base model of LoRA adapters among
    ``models``; ``on_outcome`` hears of each model as it is done."""
    from tensorguard.plots import png_bytes, save_png
    from tensorguard.plots.sensitivity import depth_figure, layer_figure

    directory = Path(out_dir) if out_dir is not None else None
    comparison = directory / COMPARISON_FILE if directory is not None else None
    if comparison is not None and len(models) > 1:
        check_writable(comparison, force=force)
    seen: dict[str, str] = {}

    def one(model: str) -> Outcome[SensitivityResult]:
        with open_model(model, base=base) as source:
            name_collision(seen, model, source.name)
            paths = output_paths(directory, source.name) if directory is not None else ()
            for path in paths:
                check_writable(path, force=force)
            result = analyze(source, options)
        if not paths:
            return Outcome(model, Status.WRITTEN, (), result=result)
        files = [(paths[0], report.dumps(result).encode()), (paths[1], png_bytes(layer_figure(result)))]
        return Outcome(model, Status.WRITTEN, tuple(map(str, write_all(files, force=force))),
                       result=result)

    outcomes = run_batch(models, one, on_outcome=on_outcome)
    results = [o.result for o in outcomes if o.result is not None]
    written = [p for o in outcomes for p in o.paths]
    if comparison is not None and len(results) > 1:
        written.append(str(save_png(depth_figure(results), comparison, force=force)))
    return SensitivityRun(results, [Failure(o.model, o.error or "") for o in outcomes
                                    if o.status is Status.FAILED], written)


def _top_table(result: SensitivityResult) -> str:
    kinds = result.options.kinds
    rows = [[i, la.name, la.role, *(la.scores[k] for k in kinds), la.mean]
            for i, la in enumerate(result.layers[:result.options.top], 1)]
    return report.table(["#", "layer", "role", *kinds, MEAN], rows)


def _render_one(result: SensitivityResult) -> list[str]:
    o = result.options
    seeds = (f"{o.samples} token sequences of {LENGTH}, matched strength {STRENGTH}"
             if o.metric is Metric.FORWARD
             else f"{o.samples} samples, seeds 0..{o.sample_count - 1}" if o.seeds is SeedMode.DISTINCT
             else f"{o.samples} samples, all seed 0")
    lines = [f"model      {result.model_name}  ({result.path})",
             f"metric     {o.metric}; {seeds}; threshold {report.fmt(o.threshold)}",
             *([f"           (auto: {result.fallback})"] if result.fallback else []),
             f"layers     {len(result.layers)} two-dimensional tensors", "",
             f"top {min(o.top, len(result.layers))} layers by mean score:", _top_table(result), "",
             report.table(["noise", "sensitive", "non-sensitive", "most sensitive"],
                          [[s.target, len(s.sensitive), len(s.non_sensitive),
                            s.sensitive[0] if s.sensitive else "-"] for s in result.splits]),
             "", "findings:", *(f"  {line}" for line in findings(result))]
    if result.attention_test is not None:
        lines += ["", "attention vs other layers:",
                  report.table(["noise", "attention mean", "other mean", "ratio"],
                               [[c.target, c.attention_mean, c.other_mean, c.ratio]
                                for c in result.attention_test])]
    return lines


def render_text(run_result: SensitivityRun) -> str:
    """The text report: details for one model, a summary table for several; files written."""
    lines: list[str] = []
    if len(run_result.results) == 1:
        lines += _render_one(run_result.results[0])
    elif run_result.results:
        rows = []
        for r in run_result.results:
            top, mean_split = r.layers[0], r.splits[-1]
            contrast = attention_contrast(MEAN, r.layers)
            rows.append([r.model_name, r.options.metric, len(r.layers), len(mean_split.sensitive),
                         top.name, top.mean, contrast.ratio])
        lines.append(report.table(["model", "metric", "layers", "sensitive", "top layer", "top mean",
                                   "attention/other"], rows))
    if run_result.failures:
        lines += ["", f"failed: {', '.join(f.model for f in run_result.failures)}"]
    if run_result.written:
        lines += ["", "wrote " + ", ".join(run_result.written)]
    return "\n".join(lines)
