"""Layer sensitivity: how strongly each 2-D tensor of a model reacts to each kind of probe noise.

Two metrics, both exact closed forms of a layer ``y = W x`` (``W`` of shape ``out x in``):

* ``gradient-norm`` (the paper's): the Frobenius norm of the gradient of ``||x W^T||`` with respect
  to ``W``. That gradient is ``u x^T`` with ``||u|| = 1`` (whenever ``W x != 0``), so its norm is
  ``||x||``: it depends only on the probe, never on the weights, and no tensor data is needed
  beyond the matrix the adversarial probe attacks. Each kind's mean over samples is divided by its
  mean over all layers, as the paper does.
* ``response`` (the default): the layer's gain on the perturbation ``d = probe.delta`` relative to
  its average gain, ``(||W d|| / ||d||) / (||W||_F / sqrt(in))``. For a random direction it is close
  to 1; above 1 the layer amplifies that kind of noise. Every tensor is streamed once, in row
  chunks, and all probe directions of its input size are applied in one float32 matmul per chunk
  (sums of squares kept in float64). Scores are rounded to ``DIGITS`` significant digits.

Samples: with ``seeds="distinct"`` (default) sample ``s`` uses seed ``s`` (``0..samples-1``); with
``seeds="repeat"`` every sample uses seed 0, as the reference code re-seeds before each one, so
all samples are identical and their mean is the seed-0 score (computed once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tensorguard import __version__, progress, report
from tensorguard.architecture import Role, block_index, role
from tensorguard.errors import TensorguardError
from tensorguard.fingerprint import fgsm_matrix
from tensorguard.loading import ModelSource, TensorInfo, open_model
from tensorguard.outputs import check_writable, write_text_atomic
from tensorguard.perturbations import ALL_KINDS, make_probes
from tensorguard.report import round_significant

SCHEMA = "tensorguard.sensitivity/1"
METRICS: tuple[str, ...] = ("response", "gradient-norm")
SEED_MODES: tuple[str, ...] = ("distinct", "repeat")
#: Scores are rounded to this many significant digits, so BLAS rounding cannot change the JSON.
DIGITS = 6
#: The aggregate over the selected kinds (mean of their scores), ranked and split like a kind.
MEAN = "mean"
FILE_SUFFIX = "_sensitivity.json"
COMPARISON_FILE = "sensitivity_comparison.png"
_CHUNK_ELEMENTS = 1 << 22  # rows per streamed chunk: about 4M elements (16 MB as float32)


@dataclass(frozen=True)
class Options:
    """The parameters of an analysis (recorded in every result)."""

    kinds: tuple[str, ...] = ALL_KINDS
    metric: str = "response"
    samples: int = 20
    seeds: str = "distinct"
    threshold: float = 1.5
    top: int = 20
    attention_test: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise TensorguardError(f"--metric {self.metric}: unknown (known: {', '.join(METRICS)})")
        if self.seeds not in SEED_MODES:
            raise TensorguardError(f"--seeds {self.seeds}: unknown (known: {', '.join(SEED_MODES)})")
        if self.samples < 1 or self.top < 1:
            raise TensorguardError("--samples and --top must be at least 1")
        if not self.kinds:
            raise TensorguardError("--noise: no perturbation kind selected")

    @property
    def seed_list(self) -> range:
        """The seeds actually probed: identical repeated samples are computed once."""
        return range(self.samples if self.seeds == "distinct" else 1)


@dataclass(frozen=True)
class LayerScore:
    """One 2-D tensor: its score for each kind and their mean."""

    name: str
    role: str
    block: int | None
    shape: tuple[int, ...]
    scores: dict[str, float]
    mean: float


@dataclass(frozen=True)
class Split:
    """Layers above ``threshold`` for one kind (or ``mean``), each list by descending score."""

    target: str
    sensitive: list[str]
    non_sensitive: list[str]


@dataclass(frozen=True)
class AttentionContrast:
    """Mean score of attention vs non-attention layers for one kind (or ``mean``)."""

    target: str
    attention_layers: int
    other_layers: int
    attention_mean: float | None
    other_mean: float | None
    ratio: float | None


@dataclass(frozen=True)
class SensitivityResult:
    """The sensitivity of every 2-D tensor of one model; ``layers`` ranked by ``mean``."""

    schema: str
    tensorguard_version: str
    model_name: str
    path: str
    options: Options
    layers: list[LayerScore]
    splits: list[Split]
    attention_test: list[AttentionContrast] | None


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


def parse_kinds(text: str) -> tuple[str, ...]:
    """``all``, one kind or a comma-separated list of kinds, in ``ALL_KINDS`` order."""
    if text.strip() == "all":
        return ALL_KINDS
    wanted = {k.strip() for k in text.split(",") if k.strip()}
    unknown = sorted(wanted - set(ALL_KINDS))
    if unknown or not wanted:
        raise TensorguardError(f"--noise {text}: unknown kind (known: all, {', '.join(ALL_KINDS)})")
    return tuple(k for k in ALL_KINDS if k in wanted)


def _round(value: float) -> float:
    return round_significant(value, DIGITS)


class _Probes:
    """Probe columns per input size, made once per (kind, dim) and shared by every tensor.

    ``directions`` (``dim x columns``, float32) holds the unit perturbations ``d / ||d||`` (zero
    for a zero perturbation) and ``norms`` the probe norms ``||x||``, columns ordered kind-major.
    """

    def __init__(self, source: ModelSource, options: Options) -> None:
        self.source = source
        self.options = options
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        if dim not in self._cache:
            matrix = fgsm_matrix(self.source, dim) if "adversarial" in self.options.kinds else None
            probes = [probe for kind in self.options.kinds
                      for probe in make_probes(kind, dim, list(self.options.seed_list), matrix)]
            deltas = torch.stack([p.delta.to(torch.float64) for p in probes], dim=1)
            lengths = torch.linalg.vector_norm(deltas, dim=0)
            directions = deltas / torch.where(lengths > 0, lengths, 1.0)
            norms = torch.stack([torch.linalg.vector_norm(p.x.to(torch.float64)) for p in probes])
            self._cache[dim] = (directions.to(torch.float32), norms)
        return self._cache[dim]


def gradient_norm(x: torch.Tensor) -> float:
    """``||d ||x W^T|| / dW||_F`` in closed form: ``||x||`` (for any ``W`` with ``x W^T != 0``)."""
    return float(torch.linalg.vector_norm(x.to(torch.float64)))


def layer_response(source: ModelSource, info: TensorInfo, directions: torch.Tensor) -> torch.Tensor:
    """``(||W d|| / ||d||) / (||W||_F / sqrt(in))`` for each unit column ``d`` of ``directions``.

    Reads the tensor once, ``_CHUNK_ELEMENTS`` at a time; sums are kept in float64. A zero matrix
    (or a zero direction) scores 0.
    """
    rows, dim = info.shape
    step = max(1, _CHUNK_ELEMENTS // dim)
    squares = torch.zeros(directions.shape[1], dtype=torch.float64)
    frobenius = torch.zeros((), dtype=torch.float64)
    for start in range(0, rows, step):
        chunk = source.read_rows(info.name, start, min(rows, start + step), torch.float32)
        squares += (chunk @ directions).square().sum(dim=0, dtype=torch.float64)
        frobenius += torch.linalg.vector_norm(chunk, dim=1).square().sum(dtype=torch.float64)
    if frobenius == 0:
        return torch.zeros_like(squares)
    return torch.sqrt(squares * dim / frobenius)


def _raw_scores(source: ModelSource, options: Options) -> dict[str, torch.Tensor]:
    """Per tensor name, the per-kind mean over samples of the metric (not yet normalised)."""
    probes = _Probes(source, options)
    shape = (len(options.kinds), len(options.seed_list))
    raw: dict[str, torch.Tensor] = {}
    matrices = source.matrices()
    for info in progress.bar(matrices, desc=source.name, total=len(matrices), unit="tensor"):
        directions, norms = probes.get(info.shape[1])
        values = (layer_response(source, info, directions) if options.metric == "response"
                  else norms)
        raw[info.name] = values.reshape(shape).mean(dim=1)
    return raw


def _split(target: str, scores: dict[str, float], threshold: float) -> Split:
    ranked = sorted(scores, key=lambda n: (-scores[n], n))
    return Split(target, [n for n in ranked if scores[n] > threshold],
                 [n for n in ranked if scores[n] <= threshold])


def _mean(values: Sequence[float]) -> float | None:
    return _round(math.fsum(values) / len(values)) if values else None


def _contrast(target: str, layers: Sequence[LayerScore]) -> AttentionContrast:
    def score(layer: LayerScore) -> float:
        return layer.mean if target == MEAN else layer.scores[target]

    attention = [score(la) for la in layers if la.role == Role.ATTENTION.value]
    other = [score(la) for la in layers if la.role != Role.ATTENTION.value]
    a, o = _mean(attention), _mean(other)
    ratio = _round(a / o) if a is not None and o else None
    return AttentionContrast(target, len(attention), len(other), a, o, ratio)


def analyze(source: ModelSource, options: Options) -> SensitivityResult:
    """Score every 2-D floating-point tensor of ``source`` for each kind in ``options.kinds``."""
    raw = _raw_scores(source, options)
    matrices = source.matrices()
    stacked = torch.stack([raw[info.name] for info in matrices])  # tensors x kinds
    if options.metric == "gradient-norm":
        stacked = stacked / stacked.mean(dim=0)
    layers = []
    for info, row in zip(matrices, stacked.tolist()):
        scores = {k: _round(v) for k, v in zip(options.kinds, row)}
        layers.append(LayerScore(info.name, role(info.name).value, block_index(info.name),
                                 tuple(info.shape), scores, _round(math.fsum(row) / len(row))))
    layers.sort(key=lambda la: (-la.mean, la.name))
    targets = (*options.kinds, MEAN)
    splits = [_split(t, {la.name: la.mean if t == MEAN else la.scores[t] for la in layers},
                     options.threshold) for t in targets]
    contrasts = [_contrast(t, layers) for t in targets] if options.attention_test else None
    path = source.shards[0] if len(source.shards) == 1 else source.root
    return SensitivityResult(SCHEMA, __version__, source.name, str(path), options, layers, splits,
                             contrasts)


def output_paths(directory: str | Path, model_name: str) -> tuple[Path, Path]:
    """``DIR/<name>_sensitivity.json`` and ``DIR/<name>_sensitivity.png``."""
    stem = model_name.replace("/", "_") + "_sensitivity"
    return Path(directory) / f"{stem}.json", Path(directory) / f"{stem}.png"


def run(models: Sequence[str], options: Options, directory: str | Path, force: bool = False,
        on_failure: Callable[[Failure], None] | None = None, base: str | None = None) -> SensitivityRun:
    """Analyse each model, writing its JSON and chart (and, for several, the comparison figure).
    ``base`` is the base model of LoRA adapters among ``models``.

    With one model any error propagates. With several, a model that fails is passed to
    ``on_failure``, recorded and skipped.
    """
    from tensorguard.plots import sensitivity as plots

    directory = Path(directory)
    comparison = directory / COMPARISON_FILE
    if len(models) > 1:
        check_writable(comparison, force)
    results: list[SensitivityResult] = []
    failures: list[Failure] = []
    written: list[str] = []
    for model in models:
        try:
            with open_model(model, base=base) as source:
                json_path, png_path = output_paths(directory, source.name)
                if any(r.model_name == source.name for r in results):
                    raise TensorguardError(f"{model}: another model in this run is named "
                                           f"{source.name!r} (its outputs would collide)")
                check_writable(json_path, force)
                check_writable(png_path, force)
                result = analyze(source, options)
            write_text_atomic(json_path, report.dumps(result), force)
            plots.layer_chart(result, png_path, force)
        except (TensorguardError, OSError, RuntimeError) as exc:
            if len(models) == 1:
                raise
            detail = str(exc) if isinstance(exc, TensorguardError) else f"{type(exc).__name__}: {exc}"
            failure = Failure(model, detail if detail.startswith(model) else f"{model}: {detail}")
            failures.append(failure)
            if on_failure:
                on_failure(failure)
            continue
        results.append(result)
        written += [str(json_path), str(png_path)]
    if len(results) > 1:
        written.append(str(plots.comparison_heatmap(results, comparison, force)))
    return SensitivityRun(results, failures, written)


def depth_profile(results: Sequence[SensitivityResult],
                  layer_role: str) -> tuple[list[int], list[list[float | None]]]:
    """Blocks and, per model, the mean ``mean`` score of its ``layer_role`` tensors in each block."""
    blocks = sorted({la.block for r in results for la in r.layers
                     if la.role == layer_role and la.block is not None})
    rows = []
    for r in results:
        by_block: dict[int, list[float]] = {}
        for la in r.layers:
            if la.role == layer_role and la.block is not None:
                by_block.setdefault(la.block, []).append(la.mean)
        rows.append([_mean(by_block[b]) if b in by_block else None for b in blocks])
    return blocks, rows


def _top_table(result: SensitivityResult) -> str:
    kinds = result.options.kinds
    rows = [[i, la.name, la.role, *(la.scores[k] for k in kinds), la.mean]
            for i, la in enumerate(result.layers[:result.options.top], 1)]
    return report.table(["#", "layer", "role", *kinds, MEAN], rows)


def _render_one(result: SensitivityResult) -> list[str]:
    o = result.options
    seeds = (f"{o.samples} samples, seeds 0..{o.samples - 1}" if o.seeds == "distinct"
             else f"{o.samples} samples, all seed 0")
    lines = [f"model      {result.model_name}  ({result.path})",
             f"metric     {o.metric}; {seeds}; threshold {report.fmt(o.threshold)}",
             f"layers     {len(result.layers)} two-dimensional tensors", "",
             f"top {min(o.top, len(result.layers))} layers by mean score:", _top_table(result), "",
             report.table(["noise", "sensitive", "non-sensitive", "most sensitive"],
                          [[s.target, len(s.sensitive), len(s.non_sensitive),
                            s.sensitive[0] if s.sensitive else "-"] for s in result.splits])]
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
            contrast = _contrast(MEAN, r.layers)
            rows.append([r.model_name, len(r.layers), len(mean_split.sensitive), top.name, top.mean,
                         contrast.ratio])
        lines.append(report.table(["model", "layers", "sensitive", "top layer", "top mean",
                                   "attention/other"], rows))
    if run_result.failures:
        lines += ["", f"failed: {', '.join(f.model for f in run_result.failures)}"]
    if run_result.written:
        lines += ["", "wrote " + ", ".join(run_result.written)]
    return "\n".join(lines)
