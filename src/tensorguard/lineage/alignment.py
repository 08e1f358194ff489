"""Putting model B in model A's coordinates before the independence test.

Two axes can be disguised without changing what a model computes, and both must be undone before
B's neurons are matched to A's:

1. **Tokens.** Embedding rows are paired by token string (``tokenizer.json`` beside the weights,
   or a GGUF file's own vocabulary), so a vocabulary that was shuffled, had tokens inserted, or
   moved to a tokenizer sharing most strings still pairs each row with its own token. The pairs
   are A's leading rows (the most-trained tokens) that B also holds, at most ``VOCAB_ROWS``.
   Only when a model carries no tokenizer are rows paired by index (``rows_by`` says so, and
   ``compare`` adds a note).
2. **The residual basis.** Any orthogonal map of the residual stream, with the norm weights folded
   into the next matrices (QuaRot, SpinQuant), leaves the function unchanged; a renaming of
   residual dimensions is the special case of a signed permutation. The map is estimated by
   orthogonal Procrustes on the paired, centred embedding rows: the ``W`` with orthonormal rows or
   columns that minimises ``|E_B W - E_A|``, from one SVD of ``E_B^T E_A``. When the widths
   differ (SliceGPT keeps a subspace of the residual stream; width pruning keeps some
   dimensions), ``W`` is semi-orthogonal: a narrower B is mapped into the subspace of A it kept,
   a wider B projected onto A's width.

``fit`` is the Procrustes similarity ``sum(singular values) / (|E_A| |E_B|)`` of the centred rows:
1 for an exact rotation or renaming, the square root of the energy kept for a slice, and near
``sqrt(width / rows)`` for unrelated embeddings. It describes the alignment; the verdict rests on
the independence test run after it, whose null does not change: the map is a function of the
embeddings only, so B's MLP weights stay independent of A's under independence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tensorguard.errors import TensorguardError
from tensorguard.loading import ModelSource
from tensorguard.loading.source import BLOCK_ELEMENTS
from tensorguard.signatures.tokens import token_strings

#: Shared vocabulary rows used for the residual alignment (A's leading, most-trained tokens).
VOCAB_ROWS = 8192
#: Paired rows needed per residual dimension of the wider model: fewer leave the map
#: underdetermined (Procrustes then fits unrelated embeddings as well as related ones).
ROWS_PER_DIMENSION = 2
BY_STRING, BY_INDEX = "token strings", "row order"


@dataclass(frozen=True)
class ResidualAlignment:
    """How B was put in A's coordinates."""

    matrix_a: str
    matrix_b: str
    rows: int  # embedding rows paired
    rows_by: str  # token strings | row order
    hidden_a: int
    hidden_b: int
    method: str  # orthogonal | semi-orthogonal
    fit: float  # Procrustes similarity of the paired, centred rows (1: an exact rotation)
    determined: bool  # at least ROWS_PER_DIMENSION paired rows per residual dimension
    note: str | None = None  # why rows were paired by index, when they were


class ResidualMap:
    """B's residual axis mapped onto A's: ``apply(rows of B) -> rows in A's basis``."""

    def __init__(self, w: torch.Tensor) -> None:
        self.w = w.float()

    def apply(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix @ self.w


def shared_rows(a: ModelSource, b: ModelSource, rows_a: int, rows_b: int,
                limit: int) -> tuple[np.ndarray, np.ndarray, str, str | None]:
    """Paired embedding rows ``(index in A, index in B)``, how they were paired, and a note when
    by index. By string: A's rows in order whose token B also holds (one row per string)."""
    strings_a, strings_b = _strings(a, rows_a), _strings(b, rows_b)
    missing = [s.name for s, strings in ((a, strings_a), (b, strings_b)) if strings is None]
    if strings_a is None or strings_b is None:
        n = min(rows_a, rows_b, limit)
        note = (f"no readable tokenizer beside {' and '.join(missing)}: embedding rows paired by "
                "index (a re-ordered vocabulary would not be seen)")
        return np.arange(n), np.arange(n), BY_INDEX, note
    in_b: dict[str, int] = {}
    for i, s in enumerate(strings_b):
        if s is not None:
            in_b.setdefault(s, i)
    pairs_a, pairs_b, seen = [], [], set()
    for i, s in enumerate(strings_a):
        if s is not None and s in in_b and s not in seen:
            seen.add(s)
            pairs_a.append(i)
            pairs_b.append(in_b[s])
            if len(pairs_a) == limit:
                break
    return np.asarray(pairs_a, dtype=np.int64), np.asarray(pairs_b, dtype=np.int64), BY_STRING, None


def _strings(source: ModelSource, rows: int) -> list[str | None] | None:
    """The token string of each embedding row; ``None`` when the model carries no vocabulary
    (``token_strings`` then stands in ``#<row>`` keys) or its tokenizer cannot be read."""
    try:
        strings = token_strings(source, rows)
    except TensorguardError:
        return None
    return None if all(s == f"#{i}" for i, s in enumerate(strings)) else strings


def gather_rows(source: ModelSource, name: str, rows: np.ndarray) -> torch.Tensor:
    """Rows ``rows`` (in that order) of a matrix as float32, streaming only the span they cover."""
    if rows.size == 0:
        return torch.zeros(0, source.info(name).shape[1])
    lo, hi = int(rows.min()), int(rows.max()) + 1
    if np.array_equal(rows, np.arange(lo, hi)):
        return source.read_rows(name, lo, hi, dtype=torch.float32)
    width = source.info(name).shape[1]
    out = torch.empty(rows.size, width)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    for first, block in source.row_blocks(name, max_elements=BLOCK_ELEMENTS, start=lo, stop=hi,
                                          dtype=torch.float32):
        at = slice(int(np.searchsorted(ordered, first)),
                   int(np.searchsorted(ordered, first + block.shape[0])))
        out[torch.from_numpy(order[at])] = block[torch.from_numpy(ordered[at] - first)]
    return out


def procrustes(x_b: torch.Tensor, x_a: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The (semi-)orthogonal ``W`` minimising ``|x_b W - x_a|`` over centred rows, and the
    Procrustes similarity ``sum(sigma) / (|x_a| |x_b|)`` of the centred rows."""
    if x_a.shape[0] < 2:  # nothing to fit
        return torch.zeros(x_b.shape[1], x_a.shape[1], dtype=torch.float64), 0.0
    x_a = x_a.double() - x_a.double().mean(dim=0)
    x_b = x_b.double() - x_b.double().mean(dim=0)
    u, sigma, vh = torch.linalg.svd(x_b.T @ x_a, full_matrices=False)
    scale = float(x_a.norm() * x_b.norm())
    return u @ vh, float(sigma.sum()) / scale if scale > 0 else 0.0


def align_residual(a: ModelSource, b: ModelSource, name_a: str,
                   name_b: str) -> tuple[ResidualAlignment, ResidualMap]:
    """Pair the embedding rows of A and B and estimate the map of B's residual basis onto A's."""
    (rows_a, hidden_a), (rows_b, hidden_b) = a.info(name_a).shape, b.info(name_b).shape
    pick_a, pick_b, by, note = shared_rows(a, b, rows_a, rows_b, VOCAB_ROWS)
    w, fit = procrustes(gather_rows(b, name_b, pick_b), gather_rows(a, name_a, pick_a))
    record = ResidualAlignment(name_a, name_b, int(pick_a.size), by, hidden_a, hidden_b,
                               "orthogonal" if hidden_a == hidden_b else "semi-orthogonal", fit,
                               pick_a.size >= ROWS_PER_DIMENSION * max(hidden_a, hidden_b), note)
    return record, ResidualMap(w)
