"""Each model read once: a sketch of every matrix (the same sampled rows in every model of the same
shape) and the cheap statistics the tree is built from.

A matrix's sketch is about ``SKETCH`` entries: all of it when small, else runs of whole rows
drawn with seed 0 (``lineage.weights.sample_runs``), so two models' sketches of a same-shape
matrix hold the same positions and every pairwise measure works on sketches alone: no model is
read twice, however many pairs it is in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from tensorguard import progress
from tensorguard.genealogy.artefacts import FULL, float_bits_of, grids_of
from tensorguard.lineage.weights import sample_runs
from tensorguard.loading import ModelInput, opened

#: Entries sampled per matrix (16 KB as float32).
SKETCH = 1 << 12
#: Matrices up to this many entries (4 MB as float32) are read whole and sampled in memory.
WHOLE = 1 << 20
#: Bits per weight of each stored float type.
DTYPE_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "F8_E4M3": 8, "F8_E5M2": 8}


@dataclass(frozen=True)
class MatrixProfile:
    """One matrix: its sampled rows (float64, ``rows`` x row length) and what they show."""

    shape: tuple[int, ...]
    sketch: np.ndarray = field(repr=False)
    bits: int  # the narrowest of: stored bits, a quantization grid found, a 16-bit float cast
    grid: str | None  # the quantization grid the values sit on
    zeros: float
    rms: float
    kurtosis: float


@dataclass(frozen=True)
class Columns:
    """A model's per-matrix statistics as arrays, in its matrices' order (``index``: name -> row):
    what the direction cues compare, one array operation per pair and cue."""

    index: dict[str, int]
    bits: np.ndarray
    zeros: np.ndarray
    rms: np.ndarray
    kurtosis: np.ndarray


@dataclass(frozen=True)
class ModelProfile:
    """One model as the tree sees it (what is derived from its matrices is computed once)."""

    name: str
    params: int
    matrices: dict[str, MatrixProfile] = field(repr=False)

    def _median(self, values: Sequence[float]) -> float:
        return float(np.median(values)) if values else float("nan")

    @functools.cached_property
    def bits(self) -> int:
        """Precision of most of its matrices (median): 32 for float32 weights with no artefact."""
        return int(np.median([m.bits for m in self.matrices.values()]))

    @functools.cached_property
    def grid(self) -> str | None:
        """The quantization grid most of its matrices sit on, if any."""
        grids = [m.grid for m in self.matrices.values()]
        common = max(set(grids), key=lambda g: (grids.count(g), g or ""))
        return common if grids.count(common) * 2 > len(grids) else None

    @functools.cached_property
    def zeros(self) -> float:
        return self._median([m.zeros for m in self.matrices.values()])

    @functools.cached_property
    def kurtosis(self) -> float:
        return self._median([m.kurtosis for m in self.matrices.values()])

    @functools.cached_property
    def layout(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Its matrices' names and shapes, in order (two models of one layout share every matrix)."""
        return tuple((n, m.shape) for n, m in self.matrices.items())

    @functools.cached_property
    def columns(self) -> Columns:
        ms = list(self.matrices.values())

        def column(values: list[float]) -> np.ndarray:
            return np.array(values, dtype=float)

        return Columns({n: i for i, n in enumerate(self.matrices)}, column([m.bits for m in ms]),
                       column([m.zeros for m in ms]), column([m.rms for m in ms]),
                       column([m.kurtosis for m in ms]))


def _profiles(shapes: list[tuple[int, ...]], sketches: list[np.ndarray],
              stored: list[int]) -> list[MatrixProfile]:
    """Each matrix's profile from its sketch. The grid and 16-bit tests run over all sketches at
    once (per matrix they would cost more than reading it); the moments run per sketch, which
    stays in the processor's cache where a stack of them would not."""
    grids = grids_of(sketches)
    cast = float_bits_of([sketch.reshape(-1) for sketch in sketches])
    out = []
    for i, (sketch, grid) in enumerate(zip(sketches, grids, strict=True)):
        flat = sketch.reshape(-1)
        centred = flat - _mean(flat)
        squares = centred * centred  # products, not powers: numpy's float power is slow
        m2 = _mean(squares)
        kurtosis = _mean(squares * squares) / m2 ** 2 if m2 > 0 else float("nan")
        zeros = float((flat.size - np.count_nonzero(flat)) / flat.size)
        out.append(MatrixProfile(shapes[i], sketch, min(stored[i], grid.bits if grid else FULL, cast[i]),
                                 grid.name if grid else None, zeros, math.sqrt(_mean(flat * flat)), kurtosis))
    return out


def _mean(flat: np.ndarray) -> float:
    """``flat.mean()`` (the same sum, divided alike) without its dispatch, paid per matrix."""
    return float(np.add.reduce(flat) / flat.size)


@functools.lru_cache(maxsize=1024)
def _runs(rows: int, width: int) -> tuple[tuple[int, int], ...]:
    """The sampled row runs of a ``rows`` x ``width`` matrix (the same for every model: drawn once)."""
    return tuple(sample_runs(rows, width, SKETCH))


def profile(model: ModelInput, *, name: str | None = None) -> ModelProfile:
    """Read ``model``'s matrices once (sampled rows only) into a ``ModelProfile``."""
    with opened(model) as source:
        read = []
        for info in progress.bar(source.matrices(), desc=f"reading {source.name}", unit="tensor"):
            rows, width = info.shape
            runs = _runs(rows, width)
            if rows * width <= WHOLE:  # one read beats many small ones
                whole = source.read(info.name, torch.float32).numpy()
                blocks = [whole[start:stop] for start, stop in runs]
            else:
                blocks = [source.read_rows(info.name, start, stop, torch.float32).numpy()
                          for start, stop in runs]
            stored = info.quant.bits if info.quant is not None else DTYPE_BITS.get(info.dtype, FULL)
            sketch = (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)).astype(np.float64)
            read.append((info, sketch, stored))
        found = _profiles([i.shape for i, _, _ in read], [s for _, s, _ in read], [b for _, _, b in read])
        matrices = {info.name: m for (info, _, _), m in zip(read, found, strict=True)}
        return ModelProfile(name or source.name, source.total_params, matrices)
