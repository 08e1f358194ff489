"""``tensorguard demo``: the whole method end to end, on tiny synthetic models and the bundled real set.

Three synthetic families differ in architecture (naming scheme, hidden, intermediate and vocab
sizes); each has a base and derivatives (fine-tune-like noise, a merged low-rank update, a bf16
cast). They are written as real safetensors files in a temporary folder, fingerprinted, clustered
with their bases as centers and saved; a held-out derivative and an unrelated model are then
predicted from the saved clusters (the default rule: a vote of the nearest known models). Finally
the bundled fingerprints of real LLMs are clustered around the paper's 8 centers and scored
against their labels, and each prediction rule is checked by leave-one-out on them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tensorguard import synthetic
from tensorguard.app.families import ClusterReport, cluster_files, predict_files
from tensorguard.clustering import PAPER_CENTERS, RuleScore, UnknownPrediction, leave_one_out
from tensorguard.fingerprints import fingerprint
from tensorguard.reference import LABELS_FILE, bundled_dir

FAMILIES = {
    "alpha": synthetic.ModelSpec("llama", hidden=64, layers=2, intermediate=176, vocab=320, heads=4),
    "beta": synthetic.ModelSpec("neox", hidden=96, layers=2, intermediate=256, vocab=512, heads=4),
    "gamma": synthetic.ModelSpec("llama", hidden=128, layers=2, intermediate=344, vocab=256, heads=8,
                                 kv_heads=2),
}
UNRELATED = synthetic.ModelSpec("gpt2", hidden=80, layers=2, intermediate=320, vocab=400, heads=4)
HELD_OUT = "alpha-finetune-2"
STRANGER = "stranger-gpt2"


@dataclass(frozen=True)
class DemoModel:
    """One synthetic model the demo built."""

    name: str
    family: str
    recipe: str
    role: str  # center, member or unknown


@dataclass(frozen=True)
class DemoResult:
    """What ``run_demo`` did and where its figures are."""

    models: tuple[DemoModel, ...]
    synthetic: ClusterReport
    predictions: tuple[UnknownPrediction, ...]
    bundled: ClusterReport
    rules: tuple[RuleScore, ...]  # leave-one-out of each prediction rule on the bundled set
    plots: tuple[Path, ...]


def _recipes() -> list[tuple[DemoModel, dict[str, torch.Tensor], torch.dtype]]:
    """Every synthetic model: (description, float32 weights, dtype to store)."""
    out = []
    for seed, (family, spec) in enumerate(FAMILIES.items(), start=100):
        base = synthetic.make_weights(spec, seed)
        out += [
            (DemoModel(f"{family}-base", family, f"{spec.scheme} h{spec.hidden} random weights",
                       "center"), base, torch.float32),
            (DemoModel(f"{family}-finetune", family, "base + 5% relative noise", "member"),
             synthetic.finetune(base, 0.05, seed=1), torch.float32),
            (DemoModel(f"{family}-lora", family, "base + merged rank-4 update (10%)", "member"),
             synthetic.low_rank_update(base, rank=4, scale=0.1, seed=2), torch.float32),
            (DemoModel(f"{family}-bf16", family, "base cast to bfloat16", "member"), base,
             torch.bfloat16),
        ]
        if family == "alpha":
            out.append((DemoModel(HELD_OUT, family, "base + 5% noise, another seed (held out)",
                                  "unknown"), synthetic.finetune(base, 0.05, seed=11), torch.float32))
    out.append((DemoModel(STRANGER, "none", f"{UNRELATED.scheme} h{UNRELATED.hidden}, unrelated",
                          "unknown"), synthetic.make_weights(UNRELATED, 7), torch.float32))
    return out


def _fingerprint_files(folder: Path, num_samples: int, say: Callable[[str], None]) -> list[DemoModel]:
    """Write every model to ``folder/models``, its fingerprint to ``folder/known`` or ``/unknown``."""
    models = []
    for model, weights, dtype in _recipes():
        path = synthetic.save_model(weights, folder / "models" / f"{model.name}.safetensors", dtype=dtype)
        fp = fingerprint(path, samples=num_samples, device="cpu", name=model.name)
        fp.save(folder / ("unknown" if model.role == "unknown" else "known"))
        models.append(model)
    say(f"built {len(models)} synthetic models as safetensors files in {folder / 'models'} "
        f"and fingerprinted them ({num_samples} probe samples each)")
    return models


def run_demo(imgs_dir: str | Path | None = None, *, num_samples: int = 15,
             log: Callable[[str], None] | None = None) -> DemoResult:
    """Run the demo; figures go to ``imgs_dir`` when it is given (the demo's own previous figures
    there are replaced), and none are drawn otherwise."""
    say = log or (lambda _msg: None)
    imgs = None if imgs_dir is None else Path(imgs_dir)
    with tempfile.TemporaryDirectory(prefix="tensorguard-demo-") as tmp:
        folder = Path(tmp)
        models = _fingerprint_files(folder, num_samples, say)
        centers = [m.name for m in models if m.role == "center"]
        synth = cluster_files([folder / "known"], centers=centers, save_to=folder / "clusters.json",
                              plot=_in(imgs, "synthetic_clusters.png"), force=True)
        say(f"clustered the {len(synth.model.members_)} known ones around {', '.join(centers)} "
            "and saved clusters.json")
        report = predict_files([folder / "unknown"], clusters=synth.saved, plot=imgs, force=True)
        say(f"predicted from clusters.json (rule {report.rule}): "
            + ", ".join(f"{p.model} -> {p.verdict}" for p in report.predictions))
    bundled = bundled_dir()
    real = cluster_files([bundled], centers=PAPER_CENTERS, labels=bundled / LABELS_FILE,
                         plot=_in(imgs, "bundled_clusters.png"), force=True)
    say(f"clustered the {len(real.model.members_)} bundled fingerprints of real LLMs around the "
        f"paper's {len(PAPER_CENTERS)} centers")
    scores = leave_one_out(real.model)
    say("checked each prediction rule by leave-one-out on them")
    plots = tuple(p for p in (synth.plot, *report.plots, real.plot) if p is not None)
    return DemoResult(tuple(models), replace(synth, saved=None), report.predictions, real, scores, plots)


def _in(folder: Path | None, name: str) -> Path | None:
    return None if folder is None else folder / name


def render_text(result: DemoResult) -> str:
    """What the demo showed, in a few lines."""
    by_name = {m.name: m for m in result.models}
    lines = ["", "Synthetic families (written to a temporary folder, now removed):"]
    lines += [f"  {m.name:18} {m.role:7} {m.recipe}" for m in result.models]
    lines += ["", "Clusters of the synthetic models (bases as centers):"]
    lines += [f"  {c.name}: {', '.join(c.members)}" for c in result.synthetic.model.clusters_]
    lines += ["", "Predictions from the saved clusters (rule neighbors: the 3 nearest known models vote):"]
    for p in result.predictions:
        truth = by_name[p.model].family
        near = ", ".join(f"{n.model} {n.distance:.3g}" for n in p.neighbors)
        lines.append(f"  {p.model}: {p.verdict} (best guess {p.base}, confidence {p.confidence:.0%}, "
                     f"distance {p.distance:.3g}, threshold {p.threshold:.3g}; nearest: {near}; "
                     f"true family: {truth})")
    ev = result.bundled.evaluation
    if ev is not None and ev.accuracy is not None:
        lines += ["", f"Bundled real LLMs: {ev.correct}/{ev.evaluated} in the cluster of their base "
                      f"model (accuracy {ev.accuracy:.1%}, purity {ev.purity:.1%}), "
                      f"silhouette {result.bundled.model.silhouette_:.3f}"]
    scores = ", ".join(f"rule {s.rule} {s.right}/{s.evaluated}" for s in result.rules)
    lines += [f"  leave-one-out over its {result.rules[0].evaluated} non-center models (each held out, "
              f"the rest refitted): {scores}"]
    if result.plots:
        lines += ["", "Pictures:"] + [f"  {p}" for p in result.plots]
    else:
        lines += ["", "No figures drawn (--plot DIR draws them)."]
    return "\n".join(lines) + "\n"
