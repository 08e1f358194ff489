"""Layer sensitivity: how strongly each 2-D tensor of a model reacts to each kind of probe noise.

Three metrics, and ``auto`` (the default): ``forward`` where ``transformers`` can run the model (the
extra is installed and the model has a configuration that fits its tensors), else ``response``, the
reason recorded in the result's ``fallback``. ``forward`` runs the model itself
(``tensorguard.forward``, the optional extra ``tensorguard[forward]``): each layer writing the
residual stream gets each kind of noise at a matched relative strength, and its score is the
next-token KL divergence divided by the median layer's (``docs/sensitivity.md``). The other two
are exact closed forms of a layer ``y = W x`` (``W`` of shape ``out x in``), over every 2-D tensor:

* ``gradient-norm`` (the paper's): the Frobenius norm of the gradient of ``||x W^T||`` with respect
  to ``W``. That gradient is ``u x^T`` with ``||u|| = 1`` (whenever ``W x != 0``), so its norm is
  ``||x||``: it depends only on the probe, never on the weights, and no tensor data is needed
  beyond the matrix the adversarial probe attacks. Each kind's mean over samples is divided by its
  mean over all layers, as the paper does.
* ``response``: the layer's gain on the perturbation ``d = probe.delta`` relative to
  its average gain, ``(||W d|| / ||d||) / (||W||_F / sqrt(in))``. For a random direction it is close
  to 1; above 1 the layer amplifies that kind of noise. Every tensor is streamed once, in row
  chunks, and all probe directions of its input size are applied in one float32 matmul per chunk
  (sums of squares kept in float64). Scores are rounded to ``DIGITS`` significant digits.

Samples: with ``seeds="distinct"`` (default) sample ``s`` uses seed ``s`` (``0..samples-1``); with
``seeds="repeat"`` every sample uses seed 0, as the reference code re-seeds before each one, so
all samples are identical and their mean is the seed-0 score (computed once).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import torch

from tensorguard import __version__, progress
from tensorguard.architectures import Role, Slot, block_index, lookup, role
from tensorguard.enums import TextEnum
from tensorguard.errors import ForwardUnavailableError, MissingExtraError, OptionError, TensorguardError
from tensorguard.loading import ModelInput, ModelSource, TensorInfo, opened
from tensorguard.probes import ALL_KINDS, KINDS, fgsm_matrix, make_probes
from tensorguard.rounding import round_significant
from tensorguard.validation import choice_option, finite_option, whole_option

SCHEMA = "tensorguard.sensitivity/2"
_log = logging.getLogger(__name__)


class Metric(TextEnum):
    RESPONSE = "response"  # the layer's gain on the perturbation, relative to its average gain
    GRADIENT_NORM = "gradient-norm"  # the paper's score: ||x||, independent of the weights
    FORWARD = "forward"  # the next-token KL when the layer's output is perturbed, over the median
    AUTO = "auto"  # forward where transformers can run the model, else response (results say which)


#: ``samples`` when not given: probes per kind, or for ``forward`` token sequences.
DEFAULT_SAMPLES = {Metric.RESPONSE: 20, Metric.GRADIENT_NORM: 20, Metric.FORWARD: 2}


class SeedMode(TextEnum):
    DISTINCT = "distinct"  # sample s uses seed s
    REPEAT = "repeat"  # every sample uses seed 0, as the reference code re-seeds


#: Scores are rounded to this many significant digits, so BLAS rounding cannot change the JSON.
DIGITS = 6
#: The aggregate over the selected kinds (mean of their scores), ranked and split like a kind.
MEAN = "mean"


E = TypeVar("E", bound=TextEnum)


@dataclass(frozen=True)
class Options:
    """The parameters of an analysis (recorded in every result); validated on construction."""

    kinds: tuple[str, ...] = ALL_KINDS
    metric: Metric = Metric.AUTO
    samples: int | None = None  # None: the metric's DEFAULT_SAMPLES (chosen with the metric for auto)
    seeds: SeedMode = SeedMode.DISTINCT
    threshold: float = 1.5
    top: int = 20
    attention_test: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", choice_option(Metric, "metric", self.metric))
        object.__setattr__(self, "seeds", choice_option(SeedMode, "seeds", self.seeds))
        object.__setattr__(self, "kinds", parse_kinds(self.kinds))
        if self.samples is None and self.metric is not Metric.AUTO:
            object.__setattr__(self, "samples", DEFAULT_SAMPLES[self.metric])
        for option in ("samples", "top"):
            if getattr(self, option) is not None:  # samples of ``auto``: chosen with the metric
                whole_option(option, getattr(self, option))
        finite_option("threshold", self.threshold)

    @property
    def sample_count(self) -> int:
        """``samples``, or the metric's default (``auto`` is resolved before anything is sampled)."""
        if self.samples is not None:
            return self.samples
        return DEFAULT_SAMPLES[Metric.RESPONSE if self.metric is Metric.AUTO else self.metric]

    @property
    def seed_list(self) -> range:
        """The seeds actually probed: identical repeated samples are computed once."""
        return range(self.sample_count if self.seeds is SeedMode.DISTINCT else 1)


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
    options: Options  # the metric actually used (never ``auto``)
    layers: list[LayerScore]
    splits: list[Split]
    attention_test: list[AttentionContrast] | None
    fallback: str | None = None  # why ``auto`` used ``response``: what kept ``forward`` from running


def parse_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"``, one kind, comma-separated kinds or a sequence of kinds, in registry order."""
    text = kinds if isinstance(kinds, str) else ",".join(kinds)
    if text.strip() == "all":
        return ALL_KINDS
    wanted = {k.strip() for k in text.split(",") if k.strip()}
    if not wanted or wanted - set(KINDS):
        raise OptionError("kinds", text, f"unknown kind (known: all, {', '.join(KINDS)})")
    return tuple(k for k in KINDS if k in wanted)


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
            needs_matrix = any(KINDS[k].needs_matrix for k in self.options.kinds)
            matrix = fgsm_matrix(self.source, dim) if needs_matrix else None
            probes = [probe for kind in self.options.kinds
                      for probe in make_probes(kind, dim, list(self.options.seed_list), matrix)]
            if matrix is not None and not all(torch.isfinite(p.x).all() for p in probes):
                raise TensorguardError(f"{self.source.name}: tensor {matrix.name!r} (the matrix the "
                                       "adversarial probe attacks) holds NaN or infinite values")
            deltas = torch.stack([p.delta.to(torch.float64) for p in probes], dim=1)
            lengths = torch.linalg.vector_norm(deltas, dim=0)
            directions = deltas / torch.where(lengths > 0, lengths, 1.0)
            norms = torch.stack([torch.linalg.vector_norm(p.x.to(torch.float64)) for p in probes])
            self._cache[dim] = (directions.to(torch.float32), norms)
        return self._cache[dim]


def layer_response(source: ModelSource, info: TensorInfo, directions: torch.Tensor) -> torch.Tensor:
    """``(||W d|| / ||d||) / (||W||_F / sqrt(in))`` for each unit column ``d`` of ``directions``.

    Reads the tensor once, in ``ModelSource.row_blocks``; sums are kept in float64. A zero matrix
    (or a zero direction) scores 0.
    """
    dim = info.shape[1]
    squares = torch.zeros(directions.shape[1], dtype=torch.float64)
    frobenius = torch.zeros((), dtype=torch.float64)
    for _, chunk in source.row_blocks(info.name, dtype=torch.float32):
        chunk_squares = (chunk @ directions).square().sum(dim=0, dtype=torch.float64)
        chunk_frobenius = torch.linalg.vector_norm(chunk, dim=1).square().sum(dtype=torch.float64)
        if not (torch.isfinite(chunk_squares).all() and torch.isfinite(chunk_frobenius)):
            wide = chunk.double()  # huge weights overflow float32: this chunk again in float64
            chunk_squares = (wide @ directions.double()).square().sum(dim=0)
            chunk_frobenius = wide.square().sum()
        squares += chunk_squares
        frobenius += chunk_frobenius
    if not (torch.isfinite(squares).all() and torch.isfinite(frobenius)):
        raise TensorguardError(f"{source.name}: tensor {info.name!r} holds NaN or infinite values "
                               "(or values too large to measure): its sensitivity is undefined")
    if frobenius == 0:
        return torch.zeros_like(squares)
    return torch.sqrt(squares * dim / frobenius)


def _forward_scores(source: ModelSource, options: Options) -> dict[str, torch.Tensor]:
    from tensorguard.forward import kl_by_layer

    kl = kl_by_layer(source, options.kinds, sequences=options.sample_count)
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in kl.items()}


def _raw_scores(source: ModelSource, options: Options) -> tuple[Options, str | None, dict[str, torch.Tensor]]:
    """The options with the metric used, why ``auto`` fell back to ``response`` (or ``None``), and
    per tensor name the per-kind mean over samples of the metric (not yet normalised)."""
    if options.metric is Metric.AUTO:
        forward = replace(options, metric=Metric.FORWARD)
        try:
            return forward, None, _forward_scores(source, forward)
        except (MissingExtraError, ForwardUnavailableError) as error:
            _log.info("%s; scored with the weight-only metric 'response'", error)
            response = replace(options, metric=Metric.RESPONSE)
            return response, str(error), _raw_scores(source, response)[2]
    if options.metric is Metric.FORWARD:
        return options, None, _forward_scores(source, options)
    probes = _Probes(source, options)
    shape = (len(options.kinds), len(options.seed_list))
    raw: dict[str, torch.Tensor] = {}
    matrices = source.matrices()
    for info in progress.bar(matrices, desc=source.name, total=len(matrices), unit="tensor"):
        directions, norms = probes.get(info.shape[1])
        values = (layer_response(source, info, directions) if options.metric is Metric.RESPONSE
                  else norms)
        raw[info.name] = values.reshape(shape).mean(dim=1)
    return options, None, raw


def _split(target: str, scores: dict[str, float], threshold: float) -> Split:
    ranked = sorted(scores, key=lambda n: (-scores[n], n))
    return Split(target, [n for n in ranked if scores[n] > threshold],
                 [n for n in ranked if scores[n] <= threshold])


def rounded_mean(values: Sequence[float]) -> float | None:
    """The mean of ``values`` as results store scores (``None`` for none)."""
    return _round(math.fsum(values) / len(values)) if values else None


def attention_contrast(target: str, layers: Sequence[LayerScore]) -> AttentionContrast:
    def score(layer: LayerScore) -> float:
        return layer.mean if target == MEAN else layer.scores[target]

    attention = [score(la) for la in layers if la.role == Role.ATTENTION.value]
    other = [score(la) for la in layers if la.role != Role.ATTENTION.value]
    a, o = rounded_mean(attention), rounded_mean(other)
    ratio = _round(a / o) if a is not None and o else None
    return AttentionContrast(target, len(attention), len(other), a, o, ratio)


def analyze(source: ModelSource, options: Options) -> SensitivityResult:
    """Score every 2-D floating-point tensor of ``source`` for each kind in ``options.kinds``."""
    options, fallback, raw = _raw_scores(source, options)
    matrices = [source.info(name) for name in raw]
    stacked = torch.stack(list(raw.values()))  # tensors x kinds
    if options.metric is Metric.GRADIENT_NORM:
        stacked = stacked / stacked.mean(dim=0)
    elif options.metric is Metric.FORWARD:
        median = stacked.quantile(0.5, dim=0)
        stacked = stacked / torch.where(median > 0, median, 1.0)
    layers = []
    for info, row in zip(matrices, stacked.tolist(), strict=True):
        scores = {k: _round(v) for k, v in zip(options.kinds, row, strict=True)}
        layers.append(LayerScore(info.name, role(info.name).value, block_index(info.name),
                                 tuple(info.shape), scores, _round(math.fsum(row) / len(row))))
    layers.sort(key=lambda la: (-la.mean, la.name))
    targets = (*options.kinds, MEAN)
    splits = [_split(t, {la.name: la.mean if t == MEAN else la.scores[t] for la in layers},
                     options.threshold) for t in targets]
    contrasts = [attention_contrast(t, layers) for t in targets] if options.attention_test else None
    path = source.origin or (source.shards[0] if len(source.shards) == 1 else source.root)
    return SensitivityResult(SCHEMA, __version__, source.name, str(path), options, layers, splits,
                             contrasts, fallback)


def analyze_sensitivity(model: ModelInput, *, kinds: str | Sequence[str] = "all",
                        metric: Metric | str = Metric.AUTO, samples: int | None = None,
                        seeds: SeedMode | str = SeedMode.DISTINCT, threshold: float = 1.5,
                        top: int = 20, attention_test: bool = False,
                        base: ModelInput | None = None, name: str | None = None) -> SensitivityResult:
    """How strongly each 2-D tensor of a model reacts to each kind of probe noise.

    Args:
        model: a model path or an open ``ModelSource``.
        kinds: ``"all"``, a kind, comma-separated kinds or a list (``probes.ALL_KINDS``).
        metric: ``auto`` (``forward`` where it can run, else ``response``; the result's
            ``options.metric`` says which and ``fallback`` why), ``forward`` (the next-token
            change through the model; ``tensorguard[forward]`` and the model's configuration),
            ``response`` (the layer's gain on the noise) or ``gradient-norm`` (the paper's).
        samples: probes per kind (default 20), or for ``forward`` token sequences (default 2);
            ``seeds``: ``distinct`` (seeds 0..N-1) or ``repeat`` (seed 0); ``forward`` has one seed.
        threshold: a layer scoring above it is sensitive; ``top``: layers a chart shows.
        attention_test: also contrast attention with the other layers.
        base, name: the base model of a LoRA adapter; the model name to record.

    Example::

        result = tensorguard.analyze_sensitivity("./Llama-3.2-1B", kinds="low_frequency")
        print(result.layers[0].name)
    """
    options = Options(kinds=parse_kinds(kinds), metric=choice_option(Metric, "metric", metric),
                      samples=samples, seeds=choice_option(SeedMode, "seeds", seeds), threshold=threshold,
                      top=top, attention_test=attention_test)
    with opened(model, base=base, name=name) as source:
        return analyze(source, options)


#: What a score is relative to, in a finding's words.
REFERENCE = {Metric.FORWARD: "the median layer", Metric.RESPONSE: "the layer's average gain",
             Metric.GRADIENT_NORM: "the mean layer"}
#: Bands of findings, in multiples of the reference (the threshold is the lowest edge).
BANDS = (100.0, 10.0, 3.0)
#: A kind stands out for a layer when its score is this many times the layer's mean over kinds.
STANDOUT = 2.0
#: A layer's part of its block, in a finding's words (other slots are named by their slot).
PARTS = {Slot.O: "attention output", Slot.DOWN: "MLP output", Slot.EMBED: "token embedding",
         Slot.LM_HEAD: "output head", Slot.QKV: "attention qkv", Slot.GATE_UP: "MLP gate/up"}


def _part(name: str) -> str:
    located = lookup(name)
    if located is None:
        return role(name).value
    return PARTS.get(located.slot, f"attention {located.slot.value}" if located.slot in
                     (Slot.Q, Slot.K, Slot.V) else f"MLP {located.slot.value}")


def _ranges(blocks: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    spans: list[list[int]] = []
    for b in sorted(set(blocks)):
        if spans and b == spans[-1][1] + 1:
            spans[-1][1] = b
        else:
            spans.append([b, b])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _number(value: float) -> str:
    """Two significant digits, as a finding says it (``3.2``, ``4400``)."""
    return f"{round_significant(value, 2):g}"


def _times(values: Sequence[float]) -> str:
    lo, hi = _number(min(values)), _number(max(values))
    return f"{hi}x" if lo == hi else f"{lo}-{hi}x"


def _where(layers: Sequence[tuple[LayerScore, float]]) -> str:
    """``MLP output of blocks 11, 28-29 (190-4400x)``, one clause per part, strongest first."""
    groups: dict[str, list[tuple[LayerScore, float]]] = {}
    for layer, score in sorted(layers, key=lambda pair: -pair[1]):
        groups.setdefault(_part(layer.name), []).append((layer, score))
    clauses = []
    for part, members in groups.items():
        blocks = [la.block for la, _ in members if la.block is not None]
        where = (f"{part} of block{'s' if len(blocks) > 1 else ''} {_ranges(blocks)}" if blocks
                 else part)
        clauses.append(f"{where} ({_times([s for _, s in members])})")
    return "; ".join(clauses)


def findings(result: SensitivityResult) -> list[str]:
    """The result in words a user can act on, one line each:

    * by the mean over kinds, the layers above the threshold in bands (``BANDS``: 100x, 10x, 3x
      the reference and the threshold), grouped by their part of the block with block ranges;
    * for each kind, the layers whose score for it is at least ``STANDOUT`` times their own mean
      over kinds (or at most its inverse): where the kinds disagree;
    * the layers tolerant to every kind (mean below 1/threshold).
    """
    o = result.options
    reference = REFERENCE[o.metric]
    lines = []
    edges = sorted({b for b in BANDS if b > o.threshold} | {o.threshold}, reverse=True)
    upper = math.inf
    for edge in edges:
        band = [(la, la.mean) for la in result.layers if edge < la.mean <= upper]
        if band:
            span = (f"{_number(edge)}x {reference} or more" if upper == math.inf
                    else f"{_number(edge)}-{_number(upper)}x {reference}")
            lines.append(f"{span} (mean of the kinds): {_where(band)}")
        upper = edge
    if not any(la.mean > o.threshold for la in result.layers):
        lines.append(f"no layer reacts more than {_number(o.threshold)}x {reference}")
    if len(o.kinds) > 1:
        for kind in o.kinds:
            more = [(la, la.scores[kind]) for la in result.layers
                    if la.scores[kind] > o.threshold and la.scores[kind] >= STANDOUT * la.mean]
            less = [(la, la.scores[kind]) for la in result.layers
                    if la.mean > o.threshold and la.scores[kind] <= la.mean / STANDOUT]
            if more:
                lines.append(f"{kind}, {STANDOUT:g}x the layer's own mean or more: {_where(more)}")
            if less:
                lines.append(f"{kind}, 1/{STANDOUT:g} of the layer's own mean or less: {_where(less)}")
    if o.threshold > 1:
        low = 1 / o.threshold
        tolerant = [(la, la.mean) for la in result.layers if la.mean < low]
        if tolerant:
            lines.append(f"tolerant to every kind (mean below {_number(low)}x {reference}): "
                         f"{_where(tolerant)}")
    return lines
