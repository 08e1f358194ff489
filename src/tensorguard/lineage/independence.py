"""A permutation- and scale-robust independence test (Zhu, Ahmed, Kuditipudi, Liang 2025).

Renaming hidden units or rescaling paired matrices leaves a model's function unchanged but
defeats direct cosine. The test undoes the renaming before it measures anything:

1. Alignment (``alignment``): embedding rows are paired by token string and B's residual basis
   is mapped onto A's by orthogonal Procrustes on them (semi-orthogonal when the widths differ),
   which undoes renamings, rotations and slices of the residual stream alike.
2. In each probed block, B's MLP neurons are matched to A's twice, independently: from the rows
   of the gate matrix and from the rows of the up matrix (gated MLPs), or from the rows of the
   up matrix and the columns of the down matrix (plain MLPs); B's rows are first put in
   A's residual basis. Each matching is a running argmax of row correlations over streamed blocks of the
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

Cost. Both steps are matrix products: the alignment ``VOCAB_ROWS x hidden^2`` multiply-adds and
one SVD of ``hidden x hidden``, each
matching ``n x neurons x hidden``. ``n``, the neurons of the narrower MLP whose two matchings are
correlated, is at most ``MATCH_NEURONS``, evenly spaced; each of them is still matched against
every neuron of the wider MLP, so its two matches are exactly those of the full test, and rho is
Spearman's rho of the full matchings restricted to these neurons. Under independence that rho has
the same null (``n`` the subset size), so the p-value stays valid; the subset costs power only:
``z = rho * sqrt(n - 1)``, so rho 1 in a block gives ``log10 p`` -113 instead of -1781 at 8192
neurons, and with four probed blocks ``p < 1e-3`` needs rho above about 0.08 in each (0.02 with
all 8192). Models with at most ``MATCH_NEURONS`` neurons per block use every neuron.
``benchmarks/compare_accuracy.py`` measures the subset against every neuron on renamed noisy
copies (the verdicts agree except in a narrow band at the detection limit) and how well
``VOCAB_ROWS`` rows recover a rotation of the residual basis from noisy embeddings.
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
from tensorguard.lineage.alignment import ResidualAlignment, ResidualMap, align_residual
from tensorguard.loading import ModelSource
from tensorguard.loading.source import BLOCK_ELEMENTS

#: Neurons of the narrower MLP whose matchings enter rho (evenly spaced; all when fewer).
MATCH_NEURONS = 512
#: Neurons of a probed block used to pick its partner block when block counts differ.
PRESCREEN_NEURONS = 128
#: Blocks with fewer neurons are not tested (the normal approximation needs a few dozen).
MIN_NEURONS = 16
_ENTRIES_PER_CHUNK = 1 << 24  # ~64 MB of float32 correlations at a time


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

    def __init__(self, source: ModelSource, block: MlpBlock, aligner: ResidualMap | None) -> None:
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
    if alignment.rows < 2:
        return IndependenceTest(False, "the vocabularies share no token strings", alignment)
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
