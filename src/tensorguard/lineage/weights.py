"""Direct weight evidence: identical tensors, cosine similarity per role, what differs in shape.

Tensors are streamed one pair at a time. Cosines are exact up to ``EXACT_LIMIT`` entries; above
it they use a fixed subsample of ``EXACT_LIMIT`` flat positions drawn with seed 0 (the same
positions in both tensors), so the figure is reproducible and cheap even for embeddings. Each
``ModelSource`` unmaps its shards when a read moves on to another tensor, so resident memory
stays near two tensors rather than growing to both models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tensorguard import progress
from tensorguard.architectures import Role, is_vocab_matrix, role
from tensorguard.loading import ModelSource

#: Entries up to which a cosine is exact; larger tensors use this many seeded sample positions.
EXACT_LIMIT = 1 << 22
ROLES = tuple(r.value for r in Role)


@dataclass(frozen=True)
class TensorComparison:
    """One tensor present in both models (``rows``: compared over these shared leading rows)."""

    name: str
    role: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    identical: bool
    cosine: float
    rows: int | None = None


@dataclass(frozen=True)
class RoleCosine:
    """Cosine similarity of the tensors of one role: median and spread."""

    tensors: int
    median: float
    q25: float
    q75: float
    min: float
    max: float


@dataclass(frozen=True)
class WeightEvidence:
    """What reading the two models' tensors side by side shows; ``None`` where not applicable."""

    applicable: bool
    reason: str | None
    shared_tensors: int
    identical_tensors: int | None
    identical_params: int | None
    identical_share: float | None  # of the larger model's parameters
    casts: tuple[str, ...]  # e.g. "F32 -> BF16", when identical only after a dtype cast
    matrix_cosine: float | None  # median cosine over shared 2-D tensors: the headline
    roles: dict[str, RoleCosine]
    only_in_a: tuple[str, ...]
    only_in_b: tuple[str, ...]
    shape_mismatches: tuple[TensorComparison, ...]
    tensors: tuple[TensorComparison, ...]

    @property
    def all_identical(self) -> bool:
        """Same tensor names, same shapes, every tensor equal (possibly after a dtype cast)."""
        return (self.applicable and not self.only_in_a and not self.only_in_b
                and not self.shape_mismatches and self.identical_tensors == self.shared_tensors)


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit equality for one dtype; across dtypes, equality after casting to the narrower one."""
    if a.dtype == b.dtype:
        return torch.equal(a, b)
    if a.element_size() == b.element_size():  # F16 vs BF16: compare exactly in float32
        return torch.equal(a.float(), b.float())
    wide, narrow = (a, b) if a.element_size() > b.element_size() else (b, a)
    return torch.equal(wide.to(narrow.dtype), narrow)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two same-shape tensors (exact, or over the documented subsample)."""
    a, b = a.reshape(-1), b.reshape(-1)
    if a.numel() > EXACT_LIMIT:
        gen = torch.Generator().manual_seed(0)
        index = torch.randint(a.numel(), (EXACT_LIMIT,), generator=gen)
        a, b = a[index], b[index]
    a, b = a.double(), b.double()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else float("nan")


def _role_cosines(items: list[TensorComparison]) -> dict[str, RoleCosine]:
    out = {}
    for r in ROLES:
        values = np.array([t.cosine for t in items if t.role == r and np.isfinite(t.cosine)])
        if values.size:
            q25, median, q75 = np.percentile(values, [25, 50, 75])
            out[r] = RoleCosine(int(values.size), float(median), float(q25), float(q75),
                                float(values.min()), float(values.max()))
    return out


def weight_evidence(a: ModelSource, b: ModelSource) -> WeightEvidence:
    """Compare every tensor name the two models share, streaming one pair at a time."""
    shared = [n for n in a.tensors if n in b.tensors]
    only_a = tuple(n for n in a.tensors if n not in b.tensors)
    only_b = tuple(n for n in b.tensors if n not in a.tensors)
    if not shared:
        return WeightEvidence(False, "the models share no tensor name", 0, None, None, None, (),
                              None, {}, only_a, only_b, (), ())
    compared, mismatched, casts = [], [], set()
    identical_params = 0
    for name in progress.bar(shared, desc="weights", unit="tensor"):
        ia, ib = a.tensors[name], b.tensors[name]
        rows = None
        if ia.shape == ib.shape:
            ta, tb = a.read(name), b.read(name)
        elif ia.ndim == ib.ndim == 2 and ia.shape[1] == ib.shape[1] and is_vocab_matrix(name):
            rows = min(ia.shape[0], ib.shape[0])
            ta, tb = a.read_rows(name, 0, rows), b.read_rows(name, 0, rows)
        else:
            mismatched.append(TensorComparison(name, role(name).value, ia.shape, ib.shape, False,
                                               float("nan")))
            continue
        same = _equal(ta, tb)
        item = TensorComparison(name, role(name).value, ia.shape, ib.shape, same,
                                1.0 if same else cosine(ta, tb), rows)
        del ta, tb
        if rows is not None:
            mismatched.append(item)
        if same and rows is None:
            identical_params += ia.numel
            if ia.dtype != ib.dtype:
                casts.add(f"{ia.dtype} -> {ib.dtype}")
        compared.append(item)
    matrices = [t.cosine for t in compared if len(t.shape_a) == 2 and np.isfinite(t.cosine)]
    identical = sum(t.identical and t.rows is None for t in compared)
    return WeightEvidence(
        applicable=True, reason=None, shared_tensors=len(shared), identical_tensors=identical,
        identical_params=identical_params,
        identical_share=identical_params / max(a.total_params, b.total_params),
        casts=tuple(sorted(casts)),
        matrix_cosine=float(np.median(matrices)) if matrices else None,
        roles=_role_cosines(compared), only_in_a=only_a, only_in_b=only_b,
        shape_mismatches=tuple(mismatched), tensors=tuple(compared))
