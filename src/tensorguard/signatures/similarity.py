"""Comparing two signatures, and the compact retrieval vector ``scan`` compares first.

Two signatures are compared by Pearson correlation over the tokens they share (a vocabulary
extension only removes tokens from the comparison), kind by kind; blocks are paired by a
monotone alignment, so removed blocks do not shift the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tensorguard.signatures.signature import KINDS, MIN_TOKENS, SYMMETRIC, Signature, off_diagonal

#: Tokens of the retrieval vector: the embedding Gram over the first of the signature's tokens.
RETRIEVAL_TOKENS = 64
#: Fewest shared block tokens for the block kinds to be compared.
MIN_BLOCK_TOKENS = 4


@dataclass(frozen=True)
class BlockPair:
    block_a: int
    block_b: int
    similarity: float


@dataclass(frozen=True)
class SignatureSimilarity:
    """How alike two signatures are, part by part (Pearson correlations, 1 = identical).

    ``score`` is the mean of the available parts: ``embed`` and, over aligned block pairs, the mean
    of each kind both models have. ``shared_tokens``: tokens both signatures hold.
    """

    score: float
    embed: float | None
    kinds: dict[str, float]
    pairs: tuple[BlockPair, ...]
    shared_tokens: int
    shared_block_tokens: int


def _shared(ta: tuple[str, ...], tb: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    where = {t: i for i, t in enumerate(tb)}
    ia = [i for i, t in enumerate(ta) if t in where]
    return np.asarray(ia, dtype=np.int64), np.asarray([where[ta[i]] for i in ia], dtype=np.int64)


@lru_cache(maxsize=64)
def _mask(n: int, symmetric: bool) -> np.ndarray:
    return off_diagonal(n, symmetric)


def _vectors(m: np.ndarray, index: np.ndarray, symmetric: bool) -> np.ndarray:
    """Off-diagonal entries over ``index`` as centred unit float32 rows (``(..., n)``)."""
    whole = len(index) == m.shape[-1] and np.array_equal(index, np.arange(len(index)))
    sub = m if whole else m[..., index[:, None], index[None, :]]
    return unit(sub[..., _mask(len(index), symmetric)])


def unit(v: np.ndarray) -> np.ndarray:
    """Centre and scale the last axis to unit norm: dot products become Pearson correlations."""
    v = v.astype(np.float32) - v.mean(-1, keepdims=True, dtype=np.float32)
    out: np.ndarray = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    return out


def align_blocks(sim: np.ndarray) -> list[tuple[int, int]]:
    """Monotone pairing of every block of the shallower model with a distinct block of the deeper
    one, in order, maximising the summed similarity (dynamic programming)."""
    flip = sim.shape[0] > sim.shape[1]
    s = sim.T if flip else sim
    n, m = s.shape
    best = np.full((n + 1, m + 1), -np.inf)
    best[0, :] = 0.0
    take = np.zeros((n + 1, m + 1), dtype=bool)
    for i in range(1, n + 1):
        for j in range(i, m + 1):
            skip, use = best[i, j - 1], best[i - 1, j - 1] + s[i - 1, j - 1]
            take[i, j] = use >= skip
            best[i, j] = max(skip, use)
    pairs, i, j = [], n, m
    while i > 0:
        if take[i, j]:
            pairs.append((i - 1, j - 1))
            i -= 1
        j -= 1
    pairs.reverse()
    return [(b, a) for a, b in pairs] if flip else pairs


def _kinds_present(sig: Signature) -> set[int]:
    """Kinds with information (``gate`` is all zeros for models without a gated MLP)."""
    return {k for k in range(len(KINDS)) if np.any(sig.blocks[:, k])} if len(sig.blocks) else set()


class Comparer:
    """Compares one signature with many: its own vectors over each token subset are computed
    once (``scan`` compares the scanned model with every shortlisted row; ``tree`` compares every
    root with every other, each as a ``Comparer``, so no root's vectors are computed twice)."""

    def __init__(self, query: Signature) -> None:
        self.query = query
        self._present = _kinds_present(query)
        self._memo: dict[tuple[str, bytes], np.ndarray] = {}

    def _own(self, part: str, index: np.ndarray) -> np.ndarray:
        key = (part, index.tobytes())
        if key not in self._memo:
            q = self.query
            m = q.embed if part == "embed" else q.blocks[:, KINDS.index(part)]
            self._memo[key] = _vectors(m, index, part in SYMMETRIC)
        return self._memo[key]

    def block_similarity(self, b: Signature | Comparer) -> tuple[np.ndarray, int]:
        """(blocks_a, blocks_b, kinds) correlations over the shared block tokens, and their count."""
        other = b if isinstance(b, Comparer) else Comparer(b)
        a, sb = self.query, other.query
        ia, ib = _shared(a.tokens[: a.block_tokens], sb.tokens[: sb.block_tokens])
        out = np.zeros((len(a.blocks), len(sb.blocks), len(KINDS)))
        if len(ia) < MIN_BLOCK_TOKENS or not len(a.blocks) or not len(sb.blocks):
            return out, len(ia)
        for k, kind in enumerate(KINDS):
            out[:, :, k] = self._own(kind, ia) @ other._own(kind, ib).T
        return out, len(ia)

    def similarity(self, b: Signature | Comparer) -> SignatureSimilarity:
        """Compare the query with ``b`` (a signature, or another's ``Comparer`` whose vectors are
        then reused) over their shared tokens, blocks aligned in order."""
        other = b if isinstance(b, Comparer) else Comparer(b)
        a, sb = self.query, other.query
        ia, ib = _shared(a.tokens, sb.tokens)
        embed = None
        if len(ia) >= MIN_TOKENS:
            embed = float(self._own("embed", ia) @ other._own("embed", ib))
        sims, shared_block = self.block_similarity(other)
        kinds: dict[str, float] = {}
        pairs: tuple[BlockPair, ...] = ()
        present = sorted(self._present & other._present)
        if sims.size and present and shared_block >= MIN_BLOCK_TOKENS:
            mean = sims[:, :, present].mean(-1)
            matched = align_blocks(mean)
            pairs = tuple(BlockPair(a.block_index[i], sb.block_index[j], float(mean[i, j]))
                          for i, j in matched)
            rows, cols = np.array([p[0] for p in matched]), np.array([p[1] for p in matched])
            kinds = {KINDS[k]: float(sims[rows, cols, k].mean()) for k in present}
        parts = [v for v in (embed, *kinds.values()) if v is not None]
        score = float(np.mean(parts)) if parts else float("nan")
        return SignatureSimilarity(score, embed, kinds, pairs, len(ia), shared_block)


def similarity(a: Signature, b: Signature) -> SignatureSimilarity:
    """Compare two signatures over their shared tokens, blocks aligned in order."""
    return Comparer(a).similarity(b)


# ---- the compact retrieval vector (the first, vectorised pass of ``scan``)

def triangle(m: np.ndarray) -> np.ndarray:
    """The strict upper triangle of the last two axes, row-major."""
    rows, cols = np.triu_indices(m.shape[-1], 1)
    return m[..., rows, cols]


def retrieval_vector(sig: Signature) -> tuple[tuple[str, ...], np.ndarray]:
    """Tokens and float16 unit vector of the embedding Gram's upper triangle over them (4 KB)."""
    n = min(RETRIEVAL_TOKENS, len(sig.tokens))
    return sig.tokens[:n], unit(triangle(sig.embed[:n, :n].astype(np.float32))).astype(np.float16)
