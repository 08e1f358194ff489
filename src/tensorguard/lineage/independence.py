"""A permutation- and scale-robust independence test (Zhu, Ahmed, Kuditipudi, Liang 2025).

Renaming hidden units or rescaling paired matrices leaves a model's function unchanged but
defeats direct cosine. The test undoes the renaming before it measures anything:

1. Residual alignment: the columns of the two token-embedding matrices, over their shared
   leading vocabulary rows (at most ``VOCAB_ROWS``), are matched by absolute Pearson
   correlation (a linear assignment when the widths agree, argmax otherwise), with signs.
2. In each probed block, B's MLP neurons are matched to A's twice, independently: from the rows
   of the gate matrix and from the rows of the up matrix (gated MLPs), or from the rows of the
   up matrix and the columns of the down matrix (plain MLPs); B's residual columns first take
   A's order. Each matching is a running argmax of row correlations over streamed blocks of the
   wider MLP's neurons (never the whole n x n matrix), from the narrower MLP into the wider one,
   so width pruning is handled.
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

Cost. Both steps are matrix products: the alignment ``VOCAB_ROWS x hidden^2`` multiply-adds, each
matching ``n x neurons x hidden``. ``n``, the neurons of the narrower MLP whose two matchings are
correlated, is at most ``MATCH_NEURONS``, evenly spaced; each of them is still matched against
every neuron of the wider MLP, so its two matches are exactly those of the full test, and rho is
Spearman's rho of the full matchings restricted to these neurons. Under independence that rho has
the same null (``n`` the subset size), so the p-value stays valid; the subset costs power only:
``z = rho * sqrt(n - 1)``, so rho 1 in a block gives ``log10 p`` -113 instead of -1781 at 8192
neurons, and with four probed blocks ``p < 1e-3`` needs rho above about 0.08 in each (0.02 with
all 8192). Models with at most ``MATCH_NEURONS`` neurons per block use every neuron.
``benchmarks/compare_accuracy.py`` measures both settings against their former values (every
neuron; 32768 rows) on renamed noisy copies: the verdicts agree except in a narrow band at the
detection limit, and 8192 rows align every residual dimension down to a column correlation of 0.06.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from tensorguard import progress
from tensorguard.architectures import MlpBlock, NeuronMatrix, mlp_blocks, vocab_matrix
from tensorguard.loading import ModelSource
from tensorguard.loading.source import BLOCK_ELEMENTS

#: Shared vocabulary rows used for the residual alignment (the leading, most-trained tokens).
VOCAB_ROWS = 8192
#: Neurons of the narrower MLP whose matchings enter rho (evenly spaced; all when fewer).
MATCH_NEURONS = 512
#: Neurons of a probed block used to pick its partner block when block counts differ.
PRESCREEN_NEURONS = 128
#: Blocks with fewer neurons are not tested (the normal approximation needs a few dozen).
MIN_NEURONS = 16
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
    matched: int  # neurons of the narrower block whose two matchings give rho (<= MATCH_NEURONS)


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
    normalised: torch.Tensor = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return normalised


def _best_keys(query: torch.Tensor, keys: Iterable[torch.Tensor], raw: bool) -> np.ndarray:
    """For each normalised query row, the index (over all key blocks, in order) of the key row of
    largest absolute correlation: a running argmax, the first index winning ties as in ``argmax``.
    ``raw`` key blocks are centred here and the products divided by their norms, which gives the
    same correlations as normalising the keys first, one pass over them cheaper."""
    best = torch.full((query.shape[0],), -1.0)
    index = torch.zeros(query.shape[0], dtype=torch.long)
    first = 0
    for block in keys:
        if raw:
            block = block - block.mean(dim=1, keepdim=True)
            corr = (query @ block.T).abs_().div_(torch.linalg.vector_norm(block, dim=1).clamp_min(1e-12))
        else:
            corr = (query @ block.T).abs_()
        value, at = corr.max(dim=1)
        better = value > best
        best = torch.where(better, value, best)
        index = torch.where(better, at + first, index)
        first += block.shape[0]
    return index.numpy()


def match_rows(query: torch.Tensor, key: torch.Tensor) -> np.ndarray:
    """For each (normalised) query row, the key row of largest absolute correlation (chunked)."""
    step = max(1, _ENTRIES_PER_CHUNK // max(1, query.shape[0]))
    return _best_keys(query, torch.split(key, step), raw=False)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the ranks, ties sharing their average rank (as
    ``scipy.stats.spearmanr``); NaN when either input is constant."""
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # a tie group spans ranks ends - counts + 1 .. ends
    return ((2 * ends - counts + 1) / 2)[inverse.reshape(-1)]


def block_log_p(rho: float, n: int) -> float:
    """Natural log of the one-sided p-value of Spearman's rho under independence (normal approx.)."""
    return float(special.log_ndtr(-rho * math.sqrt(n - 1))) if np.isfinite(rho) else 0.0


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


#: Entries up to this size keep float32 products finite (their squares summed over 1e8 rows).
FLOAT32_SAFE = 1e15


def _largest(x: torch.Tensor) -> float:
    return float(x.abs().max()) if x.numel() else 0.0


def _column_correlations(a: ModelSource, b: ModelSource, name_a: str, name_b: str,
                         rows: int) -> np.ndarray:
    """Pearson correlation of every column of A's matrix with every column of B's, over ``rows``.

    Streams both matrices in matching row blocks; each block's products are float32 (one GEMM),
    summed in float64. Columns are shifted by their means in the first block before any product,
    so a large common offset cannot cancel away float32 precision."""
    da, db = a.tensors[name_a].shape[1], b.tensors[name_b].shape[1]
    step = max(1, BLOCK_ELEMENTS // max(da, db))  # rows per block, the same for both
    cross = torch.zeros(da, db, dtype=torch.float64)
    sa, sb = torch.zeros(da, dtype=torch.float64), torch.zeros(db, dtype=torch.float64)
    qa, qb = torch.zeros(da, dtype=torch.float64), torch.zeros(db, dtype=torch.float64)
    shift_a = shift_b = None
    blocks_a = a.row_blocks(name_a, max_elements=step * da, stop=rows, dtype=torch.float32)
    blocks_b = b.row_blocks(name_b, max_elements=step * db, stop=rows, dtype=torch.float32)
    for (_, xa), (_, xb) in zip(blocks_a, blocks_b, strict=True):  # the same rows per block
        if shift_a is None or shift_b is None:
            shift_a, shift_b = xa.double().mean(dim=0), xb.double().mean(dim=0)
        # float32 products of such entries could overflow: such a block is multiplied in float64
        wide = max(_largest(xa), _largest(xb)) > FLOAT32_SAFE
        xa, xb = ((xa.double() - shift_a, xb.double() - shift_b) if wide
                  else (xa - shift_a.float(), xb - shift_b.float()))
        cross += (xa.T @ xb).double()
        sa += xa.sum(dim=0)
        sb += xb.sum(dim=0)
        qa += (xa * xa).sum(dim=0)
        qb += (xb * xb).sum(dim=0)
    cov = cross.numpy() / rows - np.outer(sa.numpy() / rows, sb.numpy() / rows)
    sd_a = np.sqrt(np.maximum(qa.numpy() / rows - (sa.numpy() / rows) ** 2, 0.0))
    sd_b = np.sqrt(np.maximum(qb.numpy() / rows - (sb.numpy() / rows) ** 2, 0.0))
    return np.asarray(cov / np.maximum(np.outer(sd_a, sd_b), 1e-30))


def assign(strength: np.ndarray) -> np.ndarray:
    """An optimal assignment of rows to distinct columns (largest total): ``index[row] = column``.

    When each row's largest entry lies in a different column, that is optimal (no assignment can
    beat every row's maximum), and finding it needs no solver; otherwise a linear assignment."""
    best = strength.argmax(axis=1)
    if np.unique(best).size == best.size:
        return np.asarray(best)
    from scipy import optimize  # only here: its import costs more than the common case

    row, col = optimize.linear_sum_assignment(strength, maximize=True)
    return np.asarray(col[np.argsort(row)])


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
        index = assign(strength)
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


class _Side:
    """One model's MLP block, read neuron-major as float32 with B's residual columns in A's order:
    a few normalised rows as queries, or every row streamed in blocks as keys."""

    def __init__(self, source: ModelSource, block: MlpBlock, aligner: _Aligner | None) -> None:
        self.source, self.aligner = source, aligner
        self.key, self.neurons = block.key, block.neurons
        self.matrices = (block.first, block.second)
        self._queries: dict[tuple[str, int], torch.Tensor] = {}  # a probe side serves many pairings

    def _aligned(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.aligner is None else self.aligner.apply(x)

    def queries(self, matrix: NeuronMatrix, pick: torch.Tensor) -> torch.Tensor:
        """Rows ``pick`` (neuron indices, evenly spaced: their count names them), normalised;
        converted to float32 after selection; read once per side."""
        cache = (matrix.name, len(pick))
        if cache not in self._queries:
            if matrix.transpose:  # stored (residual, neuron): the neurons are columns
                rows = self.source.read(matrix.name)[:, pick].T
            else:
                first = matrix.rows[0] if matrix.rows else 0
                rows = self.source.read_rows(matrix.name, first, first + self.neurons)[pick]
            self._queries[cache] = normalise_rows(self._aligned(rows.float()))
        return self._queries[cache]

    def keys(self, matrix: NeuronMatrix, queries: int) -> Iterator[torch.Tensor]:
        """Every neuron row, raw float32, in blocks small enough for ``queries x block`` products."""
        width = self.source.info(matrix.name).shape[0 if matrix.transpose else 1]
        rows = max(1, min(BLOCK_ELEMENTS // width, _ENTRIES_PER_CHUNK // max(1, queries)))
        if matrix.transpose:  # rows of the stored matrix are residual dims: read it whole
            yield from (self._aligned(x) for x in torch.split(read_neuron_major(self.source, matrix), rows))
            return
        first = matrix.rows[0] if matrix.rows else 0
        for _, block in self.source.row_blocks(matrix.name, max_elements=rows * width, start=first,
                                               stop=first + self.neurons, dtype=torch.float32):
            yield self._aligned(block)


def _spread(count: int, k: int) -> np.ndarray:
    """``k`` evenly spaced indices of ``range(count)`` (all of them when ``k >= count``)."""
    return np.unique(np.linspace(0, count - 1, min(k, count)).round().astype(np.int64))


def _rho(side_a: _Side, side_b: _Side, sample: int) -> tuple[float, int]:
    """Spearman's rho between the two matchings of ``sample`` neurons of the narrower block into
    every neuron of the wider one."""
    query, key = (side_b, side_a) if side_b.neurons <= side_a.neurons else (side_a, side_b)
    pick = torch.from_numpy(_spread(query.neurons, sample))
    first, second = (_best_keys(query.queries(mq, pick), key.keys(mk, len(pick)), raw=True)
                     for mq, mk in zip(query.matrices, key.matrices, strict=True))
    rho = spearman(first, second) if len(pick) > 2 else float("nan")
    return rho, len(pick)


def _probed(count: int, k: int) -> list[int]:
    return [int(i) for i in _spread(count, k)]


def _not_applicable(reason: str) -> IndependenceTest:
    return IndependenceTest(False, reason)


def independence_test(a: ModelSource, b: ModelSource, *, blocks: int = 4) -> IndependenceTest:
    """Test whether B is independent of A on ``blocks`` evenly spaced MLP blocks."""
    vocab_a, vocab_b = vocab_matrix(_shapes(a)), vocab_matrix(_shapes(b))
    if vocab_a is None or vocab_b is None:
        lacking = a if vocab_a is None else b
        return _not_applicable(f"{lacking.name}: no token-embedding matrix to align with")
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
            side_a, side_b = _Side(a, mlp_a[i], None), _Side(b, mlp_b[i], aligner)
            rho, n = _rho(side_a, side_b, MATCH_NEURONS)
            results.append(BlockTest(side_a.key, side_b.key, side_a.neurons, side_b.neurons, rho,
                                     block_log_p(rho, n) / math.log(10), 1, n))
    else:
        b_shallower = len(mlp_b) < len(mlp_a)
        shallow, deep = (mlp_b, mlp_a) if b_shallower else (mlp_a, mlp_b)
        for i in progress.bar(_probed(len(shallow), blocks), desc="independence", unit="block"):
            probe = _Side(b if b_shallower else a, shallow[i], aligner if b_shallower else None)

            def pair(j: int, probe: _Side = probe) -> tuple[_Side, _Side]:
                other = _Side(a if b_shallower else b, deep[j], None if b_shallower else aligner)
                return (other, probe) if b_shallower else (probe, other)

            scores = [_rho(*pair(j), sample=PRESCREEN_NEURONS)[0] for j in range(len(deep))]
            best = int(np.nanargmax(np.nan_to_num(scores, nan=-1.0)))
            side_a, side_b = pair(best)
            rho, n = _rho(side_a, side_b, MATCH_NEURONS)
            log_p = min(0.0, block_log_p(rho, n) + math.log(len(deep)))
            results.append(BlockTest(side_a.key, side_b.key, side_a.neurons, side_b.neurons, rho,
                                     log_p / math.log(10), len(deep), n))
    log_p = fisher_log_p([r.log10_p * math.log(10) for r in results])
    return IndependenceTest(True, None, alignment, tuple(results), math.exp(log_p),
                            log_p / math.log(10))
