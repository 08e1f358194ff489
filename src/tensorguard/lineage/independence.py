"""A permutation- and scale-robust independence test (Zhu, Ahmed, Kuditipudi, Liang 2025).

Renaming hidden units or rescaling paired matrices leaves a model's function unchanged but
defeats direct cosine. The test undoes the renaming before it measures anything:

1. Residual alignment: the columns of the two token-embedding matrices, over their shared
   leading vocabulary rows (at most ``VOCAB_ROWS``), are matched by absolute Pearson
   correlation (a linear assignment when the widths agree, argmax otherwise), with signs.
2. In each probed block, B's MLP neurons are matched to A's twice, independently: from the rows
   of the gate matrix and from the rows of the up matrix (gated MLPs), or from the rows of the
   up matrix and the columns of the down matrix (plain MLPs); B's residual columns first take
   A's order. Each matching is a chunked running argmax of row correlations (never the whole
   n x n matrix), from the narrower MLP into the wider one, so width pruning is handled.
3. The statistic is Spearman's rho between the two matchings. For independent models the two
   matchings are unrelated, so ``rho * sqrt(n - 1)`` is standard normal (the normal
   approximation of rho's exact permutation null, conservative in the far tail); a derived
   model gives rho near 1. Block p-values (one-sided) are combined with Fisher's method,
   computed in log space (closed form for even degrees of freedom) so tiny values do not underflow.

Correlations make the test blind to rescaling; attention is not used, so GQA and MHA do not
matter. When block counts differ (depth pruning), each probed block of the shallower model is
paired with the block of the deeper model whose matchings agree best on a 128-neuron subsample,
and its p-value is multiplied by the number of candidate blocks (Bonferroni), which keeps the
test valid despite the choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, special, stats

from tensorguard import progress
from tensorguard.architectures import MlpBlock, NeuronMatrix, mlp_blocks, vocab_matrix
from tensorguard.loading import ModelSource

#: Shared vocabulary rows used for the residual alignment (the leading, most-trained tokens).
VOCAB_ROWS = 32768
#: Neurons of a probed block used to pick its partner block when block counts differ.
PRESCREEN_NEURONS = 128
#: Blocks with fewer neurons are not tested (the normal approximation needs a few dozen).
MIN_NEURONS = 16
_ROW_CHUNK = 4096
_ENTRIES_PER_CHUNK = 1 << 24  # ~64 MB of float32 correlations at a time


@dataclass(frozen=True)
class ResidualAlignment:
    """How B's residual dimensions were put in A's order."""

    matrix_a: str
    matrix_b: str
    rows: int  # shared leading vocabulary rows used
    hidden_a: int
    hidden_b: int
    method: str  # assignment | argmax
    mean_abs_correlation: float  # of the matched column pairs


@dataclass(frozen=True)
class BlockTest:
    """One probed block pair: Spearman's rho between the two neuron matchings and its p-value."""

    block_a: str
    block_b: str
    neurons_a: int
    neurons_b: int
    rho: float
    log10_p: float
    candidates: int  # blocks considered for this pairing (Bonferroni factor)


@dataclass(frozen=True)
class IndependenceTest:
    """The combined test; ``applicable`` is false (with the reason) when it cannot be run."""

    applicable: bool
    reason: str | None
    alignment: ResidualAlignment | None = None
    blocks: tuple[BlockTest, ...] = ()
    p_value: float | None = None
    log10_p: float | None = None


def normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """Centre each row and scale it to unit norm: row dot products become Pearson correlations."""
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def match_rows(query: torch.Tensor, key: torch.Tensor) -> np.ndarray:
    """For each (normalised) query row, the key row of largest absolute correlation (chunked)."""
    out = torch.empty(query.shape[0], dtype=torch.long)
    step = max(1, _ENTRIES_PER_CHUNK // max(1, key.shape[0]))
    for start in range(0, query.shape[0], step):
        out[start:start + step] = (query[start:start + step] @ key.T).abs_().argmax(dim=1)
    return out.numpy()


def block_log_p(rho: float, n: int) -> float:
    """Natural log of the one-sided p-value of Spearman's rho under independence (normal approx.)."""
    return float(stats.norm.logsf(rho * math.sqrt(n - 1))) if np.isfinite(rho) else 0.0


def fisher_log_p(log_ps: list[float]) -> float:
    """Fisher's combination of p-values given as natural logs, returned as a natural log.

    The chi-square survival function with 2k degrees of freedom has the closed form
    ``exp(-x/2) * sum_{i<k} (x/2)^i / i!``, evaluated here in log space (no underflow).
    """
    half = -sum(log_ps)  # x / 2
    if half <= 0:
        return 0.0
    terms = [i * math.log(half) - math.lgamma(i + 1) for i in range(len(log_ps))]
    return min(0.0, float(special.logsumexp(terms)) - half)


def _column_correlations(a: ModelSource, b: ModelSource, name_a: str, name_b: str,
                         rows: int) -> np.ndarray:
    """Pearson correlation of every column of A's matrix with every column of B's, over ``rows``."""
    da, db = a.tensors[name_a].shape[1], b.tensors[name_b].shape[1]
    cross = np.zeros((da, db))
    sa, sb, qa, qb = np.zeros(da), np.zeros(db), np.zeros(da), np.zeros(db)
    for start in range(0, rows, _ROW_CHUNK):
        stop = min(rows, start + _ROW_CHUNK)
        xa = a.read_rows(name_a, start, stop, dtype=torch.float32).double()
        xb = b.read_rows(name_b, start, stop, dtype=torch.float32).double()
        cross += (xa.T @ xb).numpy()
        sa += xa.sum(0).numpy()
        sb += xb.sum(0).numpy()
        qa += (xa * xa).sum(0).numpy()
        qb += (xb * xb).sum(0).numpy()
    cov = cross / rows - np.outer(sa / rows, sb / rows)
    sd_a = np.sqrt(np.maximum(qa / rows - (sa / rows) ** 2, 0.0))
    sd_b = np.sqrt(np.maximum(qb / rows - (sb / rows) ** 2, 0.0))
    return cov / np.maximum(np.outer(sd_a, sd_b), 1e-30)


class _Aligner:
    """Puts B's residual columns in A's order (with signs): ``apply(matrix_b) -> A-shaped``."""

    def __init__(self, index: np.ndarray, sign: np.ndarray) -> None:
        self.index = torch.from_numpy(index)
        self.sign = torch.from_numpy(sign).float()

    def apply(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix[:, self.index] * self.sign


def align_residual(a: ModelSource, b: ModelSource, name_a: str,
                   name_b: str) -> tuple[ResidualAlignment, _Aligner]:
    """Match B's residual dimensions to A's from the shared leading rows of the embeddings."""
    ia, ib = a.tensors[name_a], b.tensors[name_b]
    rows = min(ia.shape[0], ib.shape[0], VOCAB_ROWS)
    corr = _column_correlations(a, b, name_a, name_b, rows)
    strength = np.abs(corr)
    if corr.shape[0] == corr.shape[1]:
        method = "assignment"
        row, col = optimize.linear_sum_assignment(strength, maximize=True)
        index = col[np.argsort(row)]
    else:
        method = "argmax"
        index = strength.argmax(axis=1)
    picked = corr[np.arange(corr.shape[0]), index]
    sign = np.where(picked < 0, -1.0, 1.0)
    record = ResidualAlignment(name_a, name_b, rows, ia.shape[1], ib.shape[1], method,
                               float(np.abs(picked).mean()))
    return record, _Aligner(index, sign)


def read_neuron_major(source: ModelSource, matrix: NeuronMatrix) -> torch.Tensor:
    """An MLP matrix as float32, one row per neuron."""
    if matrix.rows is not None:
        return source.read_rows(matrix.name, *matrix.rows, dtype=torch.float32)
    tensor = source.read(matrix.name, dtype=torch.float32)
    return tensor.t().contiguous() if matrix.transpose else tensor


def _shapes(source: ModelSource) -> dict[str, tuple[int, ...]]:
    return {i.name: i.shape for i in source.matrices()}


class _Block:
    """The two normalised neuron-major matrices of one block, B's already in A's residual order."""

    def __init__(self, source: ModelSource, block: MlpBlock, aligner: _Aligner | None) -> None:
        self.key = block.key
        self.neurons = block.neurons
        mats = [read_neuron_major(source, m) for m in (block.first, block.second)]
        if aligner is not None:
            mats = [aligner.apply(m) for m in mats]
        self.first, self.second = (normalise_rows(m) for m in mats)


def _rho(blk_a: _Block, blk_b: _Block, sample: int | None = None) -> tuple[float, int]:
    """Spearman's rho between the two matchings of the narrower block into the wider one."""
    query, key = (blk_b, blk_a) if blk_b.neurons <= blk_a.neurons else (blk_a, blk_b)
    rows = (np.unique(np.linspace(0, query.neurons - 1, sample).round().astype(np.int64))
            if sample and sample < query.neurons else np.arange(query.neurons))
    pick = torch.from_numpy(rows)
    first = match_rows(query.first[pick], key.first)
    second = match_rows(query.second[pick], key.second)
    rho = float(stats.spearmanr(first, second).statistic) if len(rows) > 2 else float("nan")
    return rho, len(rows)


def _probed(count: int, k: int) -> list[int]:
    return [int(i) for i in np.unique(np.linspace(0, count - 1, min(k, count)).round())]


def _not_applicable(reason: str) -> IndependenceTest:
    return IndependenceTest(False, reason)


def independence_test(a: ModelSource, b: ModelSource, *, blocks: int = 4) -> IndependenceTest:
    """Test whether B is independent of A on ``blocks`` evenly spaced MLP blocks."""
    vocab_a, vocab_b = vocab_matrix(_shapes(a)), vocab_matrix(_shapes(b))
    for source, vocab in ((a, vocab_a), (b, vocab_b)):
        if vocab is None:
            return _not_applicable(f"{source.name}: no token-embedding matrix to align with")
    mlp_a, mlp_b = mlp_blocks(_shapes(a)), mlp_blocks(_shapes(b))
    for source, found in ((a, mlp_a), (b, mlp_b)):
        if not found:
            return _not_applicable(f"{source.name}: no recognised MLP matrices")
    if mlp_a[0].scheme != mlp_b[0].scheme:
        return _not_applicable(f"different MLP layouts ({mlp_a[0].scheme} in {a.name}, "
                               f"{mlp_b[0].scheme} in {b.name})")
    if min(mlp_a[0].neurons, mlp_b[0].neurons) < MIN_NEURONS:
        return _not_applicable(f"fewer than {MIN_NEURONS} MLP neurons per block")
    alignment, aligner = align_residual(a, b, vocab_a, vocab_b)
    results = []
    if len(mlp_a) == len(mlp_b):
        for i in progress.bar(_probed(len(mlp_a), blocks), desc="independence", unit="block"):
            blk_a, blk_b = _Block(a, mlp_a[i], None), _Block(b, mlp_b[i], aligner)
            rho, n = _rho(blk_a, blk_b)
            results.append(BlockTest(blk_a.key, blk_b.key, blk_a.neurons, blk_b.neurons, rho,
                                     block_log_p(rho, n) / math.log(10), 1))
    else:
        b_shallower = len(mlp_b) < len(mlp_a)
        shallow, deep = (mlp_b, mlp_a) if b_shallower else (mlp_a, mlp_b)
        for i in progress.bar(_probed(len(shallow), blocks), desc="independence", unit="block"):
            probe = _Block(b if b_shallower else a, shallow[i], aligner if b_shallower else None)

            def pair(j: int, probe: _Block = probe) -> tuple[_Block, _Block]:
                other = _Block(a if b_shallower else b, deep[j], None if b_shallower else aligner)
                return (other, probe) if b_shallower else (probe, other)

            scores = [_rho(*pair(j), sample=PRESCREEN_NEURONS)[0] for j in range(len(deep))]
            best = int(np.nanargmax(np.nan_to_num(scores, nan=-1.0)))
            blk_a, blk_b = pair(best)
            rho, n = _rho(blk_a, blk_b)
            log_p = min(0.0, block_log_p(rho, n) + math.log(len(deep)))
            results.append(BlockTest(blk_a.key, blk_b.key, blk_a.neurons, blk_b.neurons, rho,
                                     log_p / math.log(10), len(deep)))
    log_p = fisher_log_p([r.log10_p * math.log(10) for r in results])
    return IndependenceTest(True, None, alignment, tuple(results), math.exp(log_p),
                            log_p / math.log(10))
