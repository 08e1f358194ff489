"""Direct weight evidence: identical tensors, cosine similarity per role, what differs in shape.

Tensors are streamed one pair at a time, in matching row blocks (``ModelSource.row_blocks``),
so memory stays near two blocks. Identity is checked block by block, a small block first, and
stops at the first block that differs, so a pair that differs early (any derivative) is not read
to the end (of a remote model, only that first block is fetched).

Cosines are exact (float64) up to ``EXACT_LIMIT`` entries. A larger tensor's cosine is computed
over a sample of ``RUNS`` runs of whole rows, about ``EXACT_LIMIT`` entries in all, the runs
drawn with seed 0 (the same rows in both tensors): reproducible, and only those rows are read.
Its standard error is about ``(1 - c^2) / sqrt(EXACT_LIMIT)`` (0.002 at cosine ``c`` = 0);
``benchmarks/compare_accuracy.py`` measures at most 0.0033 against the exact value on matrices of
the benchmark's shapes, far below the gaps the verdict draws (median cosine 0.1 and 0.5). The
former sample, ``1 << 22`` random flat positions, read every tensor whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tensorguard import progress
from tensorguard.architectures import Role, is_vocab_matrix, role
from tensorguard.loading import ModelSource

#: Entries up to which a cosine is exact; larger tensors use a sample of about this many entries.
EXACT_LIMIT = 1 << 18
#: Runs of whole rows a sampled cosine is made of (more runs, fewer rows per run).
RUNS = 16
ROLES = tuple(r.value for r in Role)
_IDENTITY_BLOCK = 1 << 20  # entries per block of the identity check
#: Entries of the identity check's first block: a derivative's tensors differ there already, so
#: the check stops having read (of a remote model: fetched) one small block, not a megabyte.
_IDENTITY_HEAD = 1 << 14
_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


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
    if a.dtype == b.dtype:  # compared as integers of the same width: bits, not float semantics
        bits = _SAME_WIDTH_INT[a.element_size()]
        return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))
    if a.element_size() == b.element_size():  # F16 vs BF16: compare exactly in float32
        return torch.equal(a.float(), b.float())
    wide, narrow = (a, b) if a.element_size() > b.element_size() else (b, a)
    return torch.equal(wide.to(narrow.dtype), narrow)


def sample_runs(rows: int, row_length: int, budget: int | None = None) -> list[tuple[int, int]]:
    """The row ranges a cosine is computed over: all rows when there are at most ``budget``
    (default ``EXACT_LIMIT``) entries, else ``RUNS`` runs of equal length drawn with seed 0 (about
    ``budget`` entries)."""
    budget = EXACT_LIMIT if budget is None else budget
    if rows * row_length <= budget:
        return [(0, rows)]
    length = max(1, budget // (RUNS * row_length))  # rows per run
    slots = -(-rows // length)
    needed = min(slots, -(-budget // (length * row_length)))
    picked = np.sort(np.random.default_rng(0).choice(slots, needed, replace=False))
    return [(int(s) * length, min(rows, (int(s) + 1) * length)) for s in picked]


def _cosine(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Cosine of the concatenated pairs of blocks, accumulated in float64."""
    dot = norm_a = norm_b = 0.0
    for x, y in pairs:
        x, y = x.reshape(-1).double(), y.reshape(-1).double()
        dot, norm_a, norm_b = dot + float(x @ y), norm_a + float(x @ x), norm_b + float(y @ y)
    return dot / math.sqrt(norm_a * norm_b) if norm_a * norm_b > 0 else float("nan")


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """A tensor as rows: (number of rows, entries per row); a scalar is one row of one."""
    return (shape[0], math.prod(shape[1:])) if shape else (1, 1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two same-shape tensors (exact, or over the documented sample of rows)."""
    a, b = (x.reshape(_rows(tuple(x.shape))) for x in (a, b))
    return _cosine((a[start:stop], b[start:stop]) for start, stop in sample_runs(*a.shape))


def _identical(a: ModelSource, b: ModelSource, name: str, rows: int) -> bool:
    """Whether rows ``:rows`` are equal (``_equal``), streamed, stopping at the first difference."""
    if not a.tensors[name].shape:  # a scalar has no rows
        return _equal(a.read(name), b.read(name))
    head = min(rows, _head(a.tensors[name].shape))

    def blocks(source: ModelSource) -> Iterator[tuple[int, torch.Tensor]]:
        yield from source.row_blocks(name, max_elements=_IDENTITY_HEAD, stop=head)
        yield from source.row_blocks(name, max_elements=_IDENTITY_BLOCK, start=head, stop=rows)

    return all(_equal(x, y) for (_, x), (_, y) in zip(blocks(a), blocks(b), strict=True))


def may_be_identical(a: ModelSource, b: ModelSource) -> bool:
    """Whether the two models may hold the same weights (``WeightEvidence.all_identical``): the
    same tensor names and shapes, and every tensor's first block equal. ``False`` as soon as one
    differs, having read (of a remote model: fetched) that one small block only."""
    if set(a.tensors) != set(b.tensors):
        return False
    if any(a.tensors[n].shape != b.tensors[n].shape for n in a.tensors):
        return False
    return all(_identical(a, b, name, _head(a.tensors[name].shape) if a.tensors[name].shape else 1)
               for name in a.tensors)


def _head(shape: tuple[int, ...]) -> int:
    """Rows of the identity check's first block."""
    rows, width = _rows(shape)
    return min(rows, max(1, _IDENTITY_HEAD // width))


def _streamed_cosine(a: ModelSource, b: ModelSource, name: str, rows: int) -> float:
    """``cosine`` of rows ``:rows`` of the two tensors, reading only the sampled rows."""
    if not a.tensors[name].shape:
        return cosine(a.read(name), b.read(name))
    runs = sample_runs(rows, _rows(a.tensors[name].shape)[1])
    return _cosine((a.read_rows(name, start, stop), b.read_rows(name, start, stop))
                   for start, stop in runs)


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
        if ia.shape == ib.shape:
            rows, compared_rows = None, _rows(ia.shape)[0]
        elif ia.ndim == ib.ndim == 2 and ia.shape[1] == ib.shape[1] and is_vocab_matrix(name):
            rows = compared_rows = min(ia.shape[0], ib.shape[0])
        else:
            mismatched.append(TensorComparison(name, role(name).value, ia.shape, ib.shape, False,
                                               float("nan")))
            continue
        same = _identical(a, b, name, compared_rows)
        item = TensorComparison(name, role(name).value, ia.shape, ib.shape, same,
                                1.0 if same else _streamed_cosine(a, b, name, compared_rows), rows)
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
