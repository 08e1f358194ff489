"""Retrieval sketches: a small seeded random projection of every row's retrieval vector, stored in
blocks of many rows, that bounds each row's retrieval score without reading its vector.

A row's float16 retrieval vector ``v`` (``D = n(n-1)/2`` token pairs) is projected by a seeded
``(D, DIMS)`` matrix of ``+-1/sqrt(DIMS)`` (``projection``); the projection is kept as int8
codes with one scale per row. For a query ``x`` in the row's pair space, ``codes @ (x R) * scale``
estimates ``v . x``. Its error has two parts: the quantisation error, bounded exactly
(``scale / 2 * |x R|_1``), and the projection's error, whose standard deviation is at most
``sqrt((|v|^2 |x|^2 + (v . x)^2) / DIMS)``; the bound allows ``Z`` of those (a row whose
estimate is off by more has odds below about 1e-9 under the Gaussian approximation of a sum of
``DIMS`` terms). Rows of
another token list than the query's are correlated over the shared tokens only; their score's
denominator (the spread of ``v`` over the shared pairs) is bounded below from each token's sum of
squares (rounded up) and sum of entries (``weights``, int8 with one scale each per row) and
``sum v``, so their bound is an upper bound too. A row costs ``DIMS + 2 n + 28`` bytes (412 for
64 tokens: a tenth of its 4 KB vector).

Nothing here decides an answer: the retrieve step re-scores exactly every row whose bound reaches
the exact score of the ``SHORTLIST``-th best row found, so the ranked rows are the exhaustive
search's (``retrieval.indexed_scores``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Projected dimensions per row (int8 each: 256 bytes beside a 4 KB vector).
DIMS = 256
#: Seed of the projection (part of the index's format: changing it needs a rebuild).
SEED = 20261205
#: Rows per stored block.
BLOCK_ROWS = 4096
#: Standard deviations of the projection's error allowed for in a bound.
Z = 6.0
#: Absolute slack for float32 rounding between the bound and the exact score.
SLACK = 1e-3


@lru_cache(maxsize=16)
def projection(pairs: int) -> np.ndarray:
    """The seeded ``(pairs, DIMS)`` float32 matrix of ``+-1/sqrt(DIMS)``."""
    signs = np.random.default_rng([SEED, pairs]).integers(0, 2, size=(pairs, DIMS), dtype=np.int8)
    out: np.ndarray = (signs.astype(np.float32) * 2 - 1) / np.float32(math.sqrt(DIMS))
    return out


@lru_cache(maxsize=16)
def _incidence(n: int) -> np.ndarray:
    """``(pairs, n)``: 1 where a pair (row-major upper triangle) touches a token."""
    a, b = np.triu_indices(n, 1)
    out = np.zeros((len(a), n))
    out[np.arange(len(a)), a] = 1
    out[np.arange(len(a)), b] = 1
    return out


@dataclass(frozen=True)
class Block:
    """Sketches of rows of one token list. ``weights``: each token's sum of squared entries
    (rounded up) and sum of entries over the pairs that touch it, as int8; ``stats``: the codes'
    scale, ``sum v``, ``|v|^2`` and the two scales of ``weights``, per row."""

    tokens: int  # token-list id
    rowids: np.ndarray  # (rows,) int64
    codes: np.ndarray  # (rows, DIMS) int8
    stats: np.ndarray  # (rows, 5) float32
    weights: np.ndarray  # (rows, 2, n) int8: squares, sums

    def __len__(self) -> int:
        return len(self.rowids)

    def take(self, keep: np.ndarray) -> Block:
        return Block(self.tokens, self.rowids[keep], self.codes[keep], self.stats[keep], self.weights[keep])

    def to_columns(self) -> tuple[int, bytes, bytes, bytes, bytes]:
        return (self.tokens, self.rowids.astype("<i8").tobytes(), self.codes.tobytes(),
                self.stats.astype("<f4").tobytes(), self.weights.tobytes())

    @classmethod
    def from_columns(cls, tokens: int, rowids: bytes, codes: bytes, stats: bytes, weights: bytes) -> Block:
        """A stored block (``ValueError`` when its columns' sizes disagree)."""
        ids = np.frombuffer(rowids, dtype="<i8").astype(np.int64)
        rows = len(ids)
        n = len(weights) // (2 * rows) if rows else 0
        if not rows or len(codes) != rows * DIMS or len(stats) != rows * 20 or len(weights) != rows * n * 2:
            raise ValueError("a retrieval block's columns disagree")
        return cls(tokens, ids, np.frombuffer(codes, dtype=np.int8).reshape(rows, DIMS),
                   np.frombuffer(stats, dtype="<f4").reshape(rows, 5).astype(np.float32),
                   np.frombuffer(weights, dtype=np.int8).reshape(rows, 2, n))

    @staticmethod
    def concat(tokens: int, blocks: list[Block]) -> Block:
        return Block(tokens, np.concatenate([b.rowids for b in blocks]),
                     np.concatenate([b.codes for b in blocks]), np.concatenate([b.stats for b in blocks]),
                     np.concatenate([b.weights for b in blocks]))


def sketch(tokens: int, rowids: np.ndarray, vectors: np.ndarray) -> Block:
    """The block of rows ``rowids`` whose float32 vectors (finite, one token list) are ``vectors``."""
    pairs = vectors.shape[1]
    n = round((1 + math.sqrt(1 + 8 * pairs)) / 2)  # n (n - 1) / 2 == pairs
    projected = vectors @ projection(pairs)
    scales = np.maximum(np.abs(projected).max(axis=1), 1e-30) / 127
    codes = np.clip(np.rint(projected / scales[:, None]), -127, 127).astype(np.int8)
    squares = np.square(vectors, dtype=np.float64)
    squares_by_token = squares @ _incidence(n)
    sums = vectors.astype(np.float64) @ _incidence(n)
    square_scale = np.maximum(squares_by_token.max(axis=1), 1e-30) / 127 * (1 + 1e-6)
    sum_scale = np.maximum(np.abs(sums).max(axis=1), 1e-30) / 127
    weights = np.stack([np.ceil(squares_by_token / square_scale[:, None]),  # rounded up
                        np.rint(sums / sum_scale[:, None])], axis=1)
    stats = np.stack([scales, vectors.sum(axis=1, dtype=np.float64), squares.sum(axis=1) * (1 + 1e-6),
                      square_scale * (1 + 1e-6), sum_scale], axis=1).astype(np.float32)
    return Block(tokens, rowids.astype(np.int64), codes, stats, np.clip(weights, -127, 127).astype(np.int8))


@dataclass(frozen=True)
class Estimates:
    """A block's rows against one query: ``estimate`` ranks them; ``may_reach`` bounds them."""

    estimate: np.ndarray  # the score's point estimate
    dot: np.ndarray  # estimate of v . x
    error: np.ndarray  # the exact part of its error bound: quantisation, and SLACK
    norm: np.ndarray  # |v|
    size: float  # |x|
    spread: tuple[np.ndarray, np.ndarray] | None  # bounds of the spread over the shared pairs

    def may_reach(self, t: float) -> np.ndarray:
        """The rows whose score can be ``t`` or more. A row scores ``t`` only if its ``v . x``
        is at least ``y`` (``t``, or ``t`` times ``|x|`` and the spread's bound); the estimate's
        standard deviation is at most ``sqrt((|v|^2 |x|^2 + y^2) / DIMS)``, and ``y - Z sd(y)``
        grows with ``y`` (``Z < sqrt(DIMS)``), so the least estimate such a row has (short of ``Z``
        deviations) is at ``y`` itself."""
        if self.spread is None:
            y = np.full(len(self.dot), t)
        else:
            y = t * self.size * (self.spread[0] if t > 0 else self.spread[1])
        sd = np.sqrt((np.square(self.norm * self.size) + np.square(y)) / DIMS)
        out: np.ndarray = self.dot >= y - Z * sd - self.error
        return out


def bounds(block: Block, x: np.ndarray, unshared: np.ndarray | None = None) -> Estimates:
    """Every row's score against ``x`` (float32, in the block's pair space), estimated and
    bounded. Without ``unshared`` the score is ``v . x`` (the row's token list is the query's);
    with it (a boolean mask of the row's tokens the query lacks, ``x`` zero on every pair that
    touches one and centred over the others) it is the correlation over the shared pairs."""
    xr = x @ projection(len(x))
    scale, total, norm2 = block.stats[:, 0], block.stats[:, 1], block.stats[:, 2]
    dot = (block.codes @ xr.astype(np.float32)) * scale
    size = float(np.linalg.norm(x))
    error = scale / 2 * float(np.abs(xr).sum()) + SLACK
    norm = np.sqrt(norm2)
    if unshared is None:
        return Estimates(dot, dot, error, norm, size, None)
    n = len(unshared)
    left = int(unshared.sum())
    inside = (n - left) * (n - left - 1) // 2
    square_scale, sum_scale = block.stats[:, 3], block.stats[:, 4]
    weights = block.weights[:, :, unshared].astype(np.float32)
    lost = weights[:, 0].sum(axis=1) * square_scale  # >= the squares of the pairs outside
    # sum over the shared pairs = sum v - (sums of the unshared tokens - sum within them)
    sum_high = (np.abs(total - weights[:, 1].sum(axis=1) * sum_scale) + left * sum_scale / 2
                + np.sqrt(left * (left - 1) / 2 * lost) + SLACK)
    low = np.sqrt(np.maximum(norm2 - lost - np.square(sum_high) / max(inside, 1), 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = np.nan_to_num(dot / (size * (low + norm) / 2), nan=-np.inf)
    return Estimates(estimate, dot, error, norm, size, (low, norm))
