"""A model's gradient fingerprint, following the TensorGuard protocol (arXiv 2506.01631) exactly.

1. Pool: the 2-D floating-point tensors in plain name order, except those in blocks above 15.
2. Selection (pool above 10 tensors): by role into embedding, attention, ffn and others, up to 3
   evenly spaced tensors of each; then ``numpy.random.RandomState(seed)`` fills up to 10 from the
   sorted remainder (the paper drew from an unordered set).
3. Samples: the same RandomState draws each sample's noise kind; each probe comes from a CPU
   generator re-seeded at every sample (``probes.make_probe``), so each (tensor, kind) pair
   is computed once and weighted by how many samples drew it.
4. Statistics of the gradient of ``||W x||`` by the exact closed form (``probes.gradients``).
5. Aggregation: per-tensor means over samples, then global and per-role means.

Stored statistics are rounded to 10 significant digits after float64 aggregation (``math.fsum``),
so the JSON is byte-identical across runs, devices and BLAS builds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tensorguard import __version__, progress
from tensorguard.architectures import Role, role
from tensorguard.devices import resolve_device
from tensorguard.errors import TensorguardError
from tensorguard.fingerprints.schema import (
    FEATURE_ROLES,
    ROLE_STATISTICS,
    STATISTICS,
    Fingerprint,
    ProbedTensor,
    ProbeRecord,
)
from tensorguard.loading import ModelInput, ModelSource, opened
from tensorguard.probes import KINDS, MAX_BLOCK, NOISE_KINDS, fgsm_matrix, make_probe, pool
from tensorguard.probes.gradients import GradientStats, closed_form_statistics, responses
from tensorguard.rounding import round_significant
from tensorguard.validation import whole_option

POOL_LIMIT = 10  # select when the pool has more tensors than this
PER_GROUP = 3
SIGNIFICANT_DIGITS = 10
_GROUPS = {Role.EMBEDDING: "embedding", Role.ATTENTION: "attention", Role.FFN: "ffn"}


def role_label(name: str) -> str:
    """The paper's layer type of a tensor: attention, ffn, embedding, norm or unknown."""
    r = role(name)
    return "unknown" if r is Role.OTHER else r.value


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


def plan_probes(source: ModelSource, num_samples: int = 15, *, seed: int = 0) -> ProbePlan:
    """The selection and every sample's noise kind, drawn from one ``RandomState(seed)``."""
    names = [i.name for i in pool(source)]
    if not names:
        raise TensorguardError(f"{source.root}: no 2-D weight tensors in blocks 0-{MAX_BLOCK}")
    state = np.random.RandomState(seed)
    tensors = _select(names, state)
    kinds = tuple(tuple(str(state.choice(NOISE_KINDS)) for _ in range(num_samples))
                  for _ in tensors)
    return ProbePlan(tuple(tensors), kinds)


def select_tensors(source: ModelSource, *, seed: int = 0) -> list[str]:
    """The probed tensors of ``source`` (the pool and selection rule), in selection order."""
    return list(plan_probes(source, 0, seed=seed).tensors)


def _round(value: float) -> float:
    return round_significant(value, SIGNIFICANT_DIGITS)


def _mean(values: Sequence[float]) -> float:
    return _round(math.fsum(values) / len(values))


def summarize_tensor(name: str, shape: tuple[int, ...], *,
                     samples: Sequence[tuple[GradientStats, int]]) -> ProbedTensor:
    """Per-statistic means over a tensor's samples, given as (statistics, number of samples)."""
    count = sum(n for _, n in samples)
    means = [_round(math.fsum(getattr(s, stat) * n for s, n in samples) / count)
             for stat in STATISTICS]
    return ProbedTensor(name, role_label(name), tuple(shape), *means)


def aggregate(model_name: str, probed: Sequence[ProbedTensor], *, total_params: int,
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


def non_finite(source: ModelSource, name: str, what: str = "") -> TensorguardError:
    """The error for a tensor whose values cannot be measured: NaN, infinite, or overflowing."""
    return TensorguardError(f"{source.name}: tensor {name!r} {what}holds NaN or infinite values "
                            "(or values too large to measure); its model has no fingerprint")


def fingerprint_source(source: ModelSource, *, samples: int = 15, seed: int = 0,
                       device: str | torch.device = "auto") -> Fingerprint:
    """Probe an opened ``source`` by the paper's protocol and return its fingerprint."""
    whole_option("samples", samples)
    target = resolve_device(device)
    plan = plan_probes(source, samples, seed=seed)
    cache: dict[tuple[str, int], torch.Tensor] = {}

    def probe(kind: str, dim: int) -> torch.Tensor:
        if (kind, dim) not in cache:
            matrix = fgsm_matrix(source, dim) if KINDS[kind].needs_matrix else None
            cache[kind, dim] = make_probe(kind, dim, matrix, seed).x
            if matrix is not None and not torch.isfinite(cache[kind, dim]).all():
                raise non_finite(source, matrix.name, "the matrix the adversarial probe attacks ")
        return cache[kind, dim]

    probed = []
    steps = progress.bar(zip(plan.tensors, plan.kinds, strict=True), desc=source.name,
                         total=len(plan.tensors), unit="tensor")
    for name, kinds in steps:
        shape = source.info(name).shape
        counts = Counter(kinds)
        distinct = [k for k in NOISE_KINDS if counts[k]]
        xs = torch.stack([probe(k, shape[1]) for k in distinct], dim=1)
        y = responses(source, name, probes=xs, device=target)
        if not torch.isfinite(y).all():
            raise non_finite(source, name)
        stats = closed_form_statistics(y, xs)
        probed.append(summarize_tensor(
            name, shape, samples=[(s, counts[k]) for s, k in zip(stats, distinct, strict=True)]))
    return aggregate(source.name, probed, total_params=source.total_params, num_samples=samples,
                     seed=seed)


def fingerprint(model: ModelInput, *, samples: int = 15, seed: int = 0,
                device: str | torch.device = "auto", base: ModelInput | None = None,
                name: str | None = None) -> Fingerprint:
    """The paper's gradient fingerprint of a model.

    Args:
        model: a model path (file, directory, index, shard, LoRA adapter) or an open ``ModelSource``.
        samples: probe samples per tensor (the paper uses 15).
        seed: seed of the selection, the kinds drawn and the probes.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; results do not
            depend on it.
        base: the base model, when ``model`` is a LoRA adapter.
        name: the model name to record (default: from the path).

    Returns:
        The ``Fingerprint``; ``fp.save(directory)`` writes it in the published file format.

    Example::

        fp = tensorguard.fingerprint("./Llama-3.2-1B", device="cpu")
        fp.save("my_features/")    # my_features/Llama-3.2-1B_features.json
    """
    with opened(model, base=base, name=name) as source:
        return fingerprint_source(source, samples=samples, seed=seed, device=device)
