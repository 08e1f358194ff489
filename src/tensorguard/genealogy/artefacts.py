"""What a derivative's weights carry that its parent's lack, read off sampled rows of one matrix:
the grid of a quantization round trip, the rounding of a cast to a 16-bit float, exact zeros.

The grids are data (``GRIDS``, ``GROUPS``): a quantizer maps each group of entries onto evenly
spaced levels, either symmetric (step = largest magnitude / ``steps``: int8 absmax, GGUF Q8_0,
Q4_0) or asymmetric (step = (max - min) / ``steps``: Q4_1, GPTQ/AWQ-style 4-bit). Values read back
from such a round trip sit on the grid to within float rounding; trained float weights never do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Largest distance from the nearest level, in steps, that still counts as on the grid.
TOLERANCE = 0.02
#: Share of a matrix's groups that must sit on a grid for the matrix to count as quantized.
ON_GRID = 0.9
#: Bits of a float32 value (a weight with no artefact).
FULL = 32
#: Entries tried as float16 before all of them are.
_HEAD = 64
#: Entries of each group tried on every grid before all of them are.
_SCREEN = 8


@dataclass(frozen=True)
class Grid:
    """One family of quantization levels: ``bits`` per weight, levels ``step`` apart."""

    name: str
    bits: int
    symmetric: bool
    steps: int  # the largest magnitude (symmetric) or the range (asymmetric) in steps


GRIDS = (
    Grid("4-bit asymmetric", 4, False, 15),
    Grid("4-bit symmetric", 4, True, 8),
    Grid("4-bit symmetric", 4, True, 7),
    Grid("8-bit symmetric", 8, True, 127),
    Grid("8-bit asymmetric", 8, False, 255),
)
#: Entries per quantization group tried (0: the whole row).
GROUPS = (32, 64, 128, 0)


def _share_on_grid(chunks: np.ndarray, grid: Grid) -> float:
    """Share of the groups (rows of ``chunks``) whose entries all sit on ``grid``'s levels; groups
    of one repeated value (all zero) say nothing and are left out."""
    if grid.symmetric:
        low = np.zeros((chunks.shape[0], 1))
        step = np.abs(chunks).max(axis=1, keepdims=True) / grid.steps
    else:
        low = chunks.min(axis=1, keepdims=True)
        step = (chunks.max(axis=1, keepdims=True) - low) / grid.steps
    useful = step[:, 0] > 0
    if not useful.any():
        return 0.0
    q = (chunks[useful] - low[useful]) / step[useful]
    return float((np.abs(q - np.rint(q)).max(axis=1) <= TOLERANCE).mean())


_SYMMETRIC = np.array([g.symmetric for g in GRIDS])
_STEPS = np.array([g.steps for g in GRIDS], dtype=float)


def _plausible(firsts: np.ndarray) -> np.ndarray:
    """Which grids each group's entries sit on (``[group, grid]``, rows of ``firsts`` the groups:
    every group of one size against every grid in one array operation, the quick test before the
    full one). The first ``_SCREEN`` entries of each group are tried first: only the groups and
    grids they fit are tried whole (an entry off the grid rules it out)."""
    top, bottom = firsts.max(axis=1), firsts.min(axis=1)
    scale = np.where(_SYMMETRIC[None, :], np.abs(firsts).max(axis=1)[:, None], (top - bottom)[:, None])
    low = np.where(_SYMMETRIC[None, :], 0.0, bottom[:, None])
    step = np.where(scale > 0, scale / _STEPS[None, :], 1.0)

    def on(entries: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        q = (entries[:, None, :] - low[rows, :, None]) / step[rows, :, None]
        return np.asarray(np.abs(q - np.rint(q)).max(axis=2) <= TOLERANCE, dtype=bool)

    fits: np.ndarray = on(firsts[:, :_SCREEN], slice(None)) & (scale > 0)
    rows = np.flatnonzero(fits.any(axis=1))
    if rows.size:
        fits[rows] &= on(firsts[rows], rows)
    return fits


def grids_of(matrices: list[np.ndarray]) -> list[Grid | None]:
    """``grid_of`` of each of ``matrices`` (a model's sketches), the quick test of every group size
    of every matrix batched by group size: a test per matrix costs more than reading it."""
    tests: list[tuple[int, np.ndarray, np.ndarray]] = []  # matrix, its groups, the first not all zero
    for i, rows in enumerate(matrices):
        flat = rows.reshape(-1)
        first = 0 if flat.size and flat[0] != 0 else int(np.argmax(flat != 0))  # trained weights: 0
        if flat.size == 0 or flat[first] == 0:
            continue  # all zero: no group says anything
        width = rows.shape[1]
        for group in GROUPS:
            size = group or width
            if width % size == 0 and size >= 8:
                chunks = rows.reshape(-1, size)
                tests.append((i, chunks, chunks[first // size]))
    by_size: dict[int, list[int]] = {}
    for k, (_, _, head) in enumerate(tests):
        by_size.setdefault(head.size, []).append(k)
    fits: dict[int, list[bool]] = {}
    for idx in by_size.values():
        fits.update(zip(idx, _plausible(np.stack([tests[k][2] for k in idx])).tolist(), strict=True))
    found: list[list[Grid]] = [[] for _ in matrices]
    for k, (i, chunks, _) in enumerate(tests):
        if any(fits[k]):
            found[i] += [g for g, ok in zip(GRIDS, fits[k], strict=True)
                         if ok and _share_on_grid(chunks, g) >= ON_GRID]
    return [min(f, key=lambda g: (g.bits, GRIDS.index(g))) if f else None for f in found]


def grid_of(rows: np.ndarray) -> Grid | None:
    """The coarsest grid that ``rows`` (whole rows of one matrix, float64) sit on, else ``None``."""
    return grids_of([rows])[0]


def _float_bits(flat: np.ndarray) -> int:
    """``float_bits`` of one array, every entry tried."""
    as32 = flat.astype(np.float32)
    if not ((as32.view(np.uint32) & 0xFFFF) != 0).any():
        return 16  # every value a bfloat16
    return 16 if bool((as32.astype(np.float16).astype(np.float32) == as32).all()) else FULL


def float_bits_of(flats: Sequence[np.ndarray]) -> list[int]:
    """``float_bits`` of each of ``flats`` (1-D). Float weights show it in their first entries: those
    of all arrays are tried at once, and only the arrays whose first entries are all 16-bit values
    are tried whole."""
    by_head: dict[int, list[int]] = {}
    for i, flat in enumerate(flats):
        by_head.setdefault(min(flat.size, _HEAD), []).append(i)
    bits = [FULL] * len(flats)
    for idx in by_head.values():
        head = np.stack([flats[i][:_HEAD] for i in idx]).astype(np.float32)
        bf16 = ~((head.view(np.uint32) & 0xFFFF) != 0).any(axis=1)
        fp16 = (head.astype(np.float16).astype(np.float32) == head).all(axis=1)
        for k in np.flatnonzero(bf16 | fp16).tolist():
            bits[idx[k]] = _float_bits(flats[idx[k]])
    return bits


def float_bits(values: np.ndarray) -> int:
    """16 when every value is exactly a bfloat16 or a float16 (a cast copy), else 32."""
    return _float_bits(values.reshape(-1))
