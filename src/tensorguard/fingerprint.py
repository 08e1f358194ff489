"""A model's gradient fingerprint, following the TensorGuard protocol (arXiv 2506.01631) exactly.

1. Pool: the 2-D floating-point tensors in plain name order, except those in blocks above 15.
2. Selection (pool above 10 tensors): by role into embedding, attention, ffn and others, up to 3
   evenly spaced tensors of each; then ``numpy.random.RandomState(seed)`` fills up to 10 from the
   sorted remainder (the paper drew from an unordered set).
3. Samples: the same RandomState draws each sample's noise kind; each probe comes from a CPU
   generator re-seeded at every sample (``perturbations.make_probe``), so each (tensor, kind) pair
   is computed once and weighted by how many samples drew it.
4. Statistics of the gradient of ``||W x||`` by the exact closed form (``tensorguard.gradients``).
5. Aggregation: per-tensor means over samples, then global and per-role means.

Stored statistics are rounded to 10 significant digits after float64 aggregation (``math.fsum``),
so the JSON is byte-identical across runs, devices and BLAS builds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tensorguard import __version__, progress
from tensorguard.architecture import Role, block_index, role
from tensorguard.errors import TensorguardError
from tensorguard.features import (
    FEATURE_ROLES,
    ROLE_STATISTICS,
    STATISTICS,
    Fingerprint,
    ProbedTensor,
    ProbeRecord,
    default_path,
)
from tensorguard.gradients import GradientStats, closed_form_statistics, responses
from tensorguard.loading import ModelSource, TensorInfo, open_model
from tensorguard.outputs import write_text_atomic
from tensorguard.perturbations import NOISE_KINDS, RowReader, make_probe
from tensorguard.report import round_significant

MAX_BLOCK = 15  # the paper probes blocks 0..15 only
POOL_LIMIT = 10  # select when the pool has more tensors than this
PER_GROUP = 3
SIGNIFICANT_DIGITS = 10
_GROUPS = {Role.EMBEDDING: "embedding", Role.ATTENTION: "attention", Role.FFN: "ffn"}


def role_label(name: str) -> str:
    """The paper's layer type of a tensor: attention, ffn, embedding, norm or unknown."""
    r = role(name)
    return "unknown" if r is Role.OTHER else r.value


def pool(source: ModelSource) -> list[TensorInfo]:
    """The tensors the paper may probe: 2-D float tensors outside blocks above 15, in name order."""
    return [i for i in source.matrices() if (block_index(i.name) or 0) <= MAX_BLOCK]


def _select(names: Sequence[str], state: np.random.RandomState) -> list[str]:
    if len(names) <= POOL_LIMIT:
        return list(names)
    groups: dict[str, list[str]] = {g: [] for g in (*_GROUPS.values(), "others")}
    for name in names:
        groups[_GROUPS.get(role(name), "others")].append(name)
    chosen: list[str] = []
    for members in groups.values():
        if members:
            positions = np.linspace(0, len(members) - 1, min(PER_GROUP, len(members)), dtype=int)
            chosen += [members[i] for i in positions]
    if len(chosen) < POOL_LIMIT:
        remaining = sorted(set(names) - set(chosen))
        chosen += [str(n) for n in state.choice(remaining, POOL_LIMIT - len(chosen), replace=False)]
    return chosen


@dataclass(frozen=True)
class ProbePlan:
    """Which tensors are probed, and the noise kind drawn for each of their samples."""

    tensors: tuple[str, ...]
    kinds: tuple[tuple[str, ...], ...]  # per tensor, one kind per sample, in draw order


def plan_probes(source: ModelSource, num_samples: int = 15, seed: int = 0) -> ProbePlan:
    """The selection and every sample's noise kind, drawn from one ``RandomState(seed)``."""
    names = [i.name for i in pool(source)]
    if not names:
        raise TensorguardError(f"{source.root}: no 2-D weight tensors in blocks 0-{MAX_BLOCK}")
    state = np.random.RandomState(seed)
    tensors = _select(names, state)
    kinds = tuple(tuple(str(state.choice(NOISE_KINDS)) for _ in range(num_samples))
                  for _ in tensors)
    return ProbePlan(tuple(tensors), kinds)


def select_tensors(source: ModelSource, seed: int = 0) -> list[str]:
    """The probed tensors of ``source`` (the pool and selection rule), in selection order."""
    return list(plan_probes(source, 0, seed).tensors)


def fgsm_matrix(source: ModelSource, dim: int) -> RowReader:
    """The matrix the adversarial probe of width ``dim`` attacks: the first pool tensor that fits."""
    info = next(i for i in pool(source) if i.shape[1] == dim)
    return RowReader((info.shape[0], dim),
                     lambda start, stop: source.read_rows(info.name, start, stop, torch.float32))


def _round(value: float) -> float:
    return round_significant(value, SIGNIFICANT_DIGITS)


def _mean(values: Sequence[float]) -> float:
    return _round(math.fsum(values) / len(values))


def summarize_tensor(name: str, shape: tuple[int, ...],
                     samples: Sequence[tuple[GradientStats, int]]) -> ProbedTensor:
    """Per-statistic means over a tensor's samples, given as (statistics, number of samples)."""
    count = sum(n for _, n in samples)
    means = [_round(math.fsum(getattr(s, stat) * n for s, n in samples) / count)
             for stat in STATISTICS]
    return ProbedTensor(name, role_label(name), tuple(shape), *means)


def aggregate(model_name: str, total_params: int, probed: Sequence[ProbedTensor],
              num_samples: int, seed: int) -> Fingerprint:
    """The paper's 14 features from the per-tensor means (role features only for probed roles)."""
    features = {f"global_{s}": _mean([getattr(t, s) for t in probed]) for s in STATISTICS}
    for group in FEATURE_ROLES:
        members = [t for t in probed if t.role == group]
        if members:
            features.update({f"{group}_{s}": _mean([getattr(t, s) for t in members])
                             for s in ROLE_STATISTICS})
    return Fingerprint(model_name, features, total_params, len(probed),
                       ProbeRecord(seed, num_samples, tuple(probed)), __version__)


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise TensorguardError(f"--device {device}: not a device (auto, cpu, cuda or cuda:N)") from None
    if resolved.type not in ("cpu", "cuda"):
        raise TensorguardError(f"--device {device}: not a device (auto, cpu, cuda or cuda:N)")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise TensorguardError(f"--device {device}: CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise TensorguardError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return resolved


def fingerprint_model(source: ModelSource, num_samples: int = 15, device: str = "auto",
                      seed: int = 0) -> Fingerprint:
    """Probe ``source`` by the paper's protocol and return its fingerprint (not yet written)."""
    if num_samples < 1:
        raise TensorguardError(f"--samples {num_samples}: must be at least 1")
    target = resolve_device(device)
    plan = plan_probes(source, num_samples, seed)
    cache: dict[tuple[str, int], torch.Tensor] = {}

    def probe(kind: str, dim: int) -> torch.Tensor:
        if (kind, dim) not in cache:
            matrix = fgsm_matrix(source, dim) if kind == "adversarial" else None
            cache[kind, dim] = make_probe(kind, dim, matrix, seed).x
        return cache[kind, dim]

    probed = []
    steps = progress.bar(zip(plan.tensors, plan.kinds), desc=source.name,
                         total=len(plan.tensors), unit="tensor")
    for name, kinds in steps:
        shape = source.info(name).shape
        counts = Counter(kinds)
        distinct = [k for k in NOISE_KINDS if counts[k]]
        xs = torch.stack([probe(k, shape[1]) for k in distinct], dim=1)
        stats = closed_form_statistics(responses(source, name, xs, target), xs)
        probed.append(summarize_tensor(name, shape, [(s, counts[k]) for s, k in zip(stats, distinct)]))
    return aggregate(source.name, source.total_params, probed, num_samples, seed)


def write_fingerprint(fp: Fingerprint, directory: str | Path, force: bool = False) -> Path:
    """Write ``fp`` atomically to ``DIR/<model_name>_features.json``; refuse to overwrite without force."""
    return write_text_atomic(default_path(directory, fp.model_name), fp.dumps(), force)


@dataclass(frozen=True)
class Outcome:
    """What happened to one model of a batch: ``written``, ``skipped`` (output exists) or ``failed``."""

    model: str
    status: str
    path: str | None = None
    error: str | None = None
    fingerprint: Fingerprint | None = None


def fingerprint_paths(models: Sequence[str], directory: str | Path, num_samples: int = 15,
                      device: str = "auto", name: str | None = None, base: str | None = None,
                      force: bool = False,
                      on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Fingerprint and write each model; a model's bad input fails that model, not the batch.

    With a single model its error is raised (``TensorguardError``) instead of being recorded.
    """
    if name is not None and len(models) != 1:
        raise TensorguardError("--name applies to a single model only")
    resolve_device(device)
    outcomes: list[Outcome] = []
    written: dict[Path, str] = {}
    for model in models:
        try:
            outcome = _one(model, directory, num_samples, device, name, base, force, written)
        except (TensorguardError, OSError, RuntimeError, MemoryError) as exc:
            if len(models) == 1:
                raise
            outcome = Outcome(model, "failed", error=str(exc))
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def _one(model: str, directory: str | Path, num_samples: int, device: str, name: str | None,
         base: str | None, force: bool, written: dict[Path, str]) -> Outcome:
    with open_model(model, base=base, name=name) as source:
        path = default_path(directory, source.name)
        if path in written:
            raise TensorguardError(f"{model}: model name {source.name!r} is also the name of "
                                   f"{written[path]} in this run; rename one with --name")
        if path.exists() and not force:
            return Outcome(model, "skipped", str(path))
        fp = fingerprint_model(source, num_samples, device)
    write_fingerprint(fp, directory, force)
    written[path] = model
    return Outcome(model, "written", str(path), fingerprint=fp)


def render_text(outcomes: Sequence[Outcome]) -> str:
    """One line per written or skipped model (failures go to stderr as they happen)."""
    lines = []
    for o in outcomes:
        if o.status == "written" and o.fingerprint is not None:
            fp = o.fingerprint
            lines.append(f"{fp.model_name}: wrote {o.path} ({fp.num_layers} tensors x "
                         f"{fp.probe.num_samples if fp.probe else 0} samples)")
        elif o.status == "skipped":
            lines.append(f"{o.model}: {o.path} exists, skipped (use --force)")
    return "\n".join(lines)
