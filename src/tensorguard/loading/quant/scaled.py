"""Weights stored as one float8 or int8 code per entry with a grid of scales (and zero points).

``W[i, j] = (code[i, j] - zero[i // bn, j // bk]) * scale[i // bn, j // bk] * factor``, with the
scale block ``(bn, bk)`` one of: the whole tensor (one scale), one row (per-channel scales of shape
``[N]`` or ``[N, 1]``), a group of ``K / G`` inputs (scales ``[N, G]``), or a 2-D block given by
the config (``weight_block_size``, e.g. 128x128: scales ``[ceil(N/bn), ceil(K/bk)]``).

Used by FP8 checkpoints (``weight_scale_inv``), bitsandbytes 8-bit (``SCB``, factor 1/127) and
compressed-tensors' float- and int-quantized formats. Rows are read directly: a block of rows reads
those rows of the codes and the scale rows covering them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorguard.errors import TensorguardError
from tensorguard.loading.header import FLOAT_DTYPES, TensorInfo
from tensorguard.loading.quant.base import (
    PackedTensor,
    StoredTensors,
    config_file,
    expect,
    inconsistent,
    quantization,
)
from tensorguard.validation import shown

if TYPE_CHECKING:
    import torch

CODE_DTYPES = {"F8_E4M3": ("fp8-e4m3", 8), "F8_E5M2": ("fp8-e5m2", 8), "I8": ("int8", 8)}


class ScaledTensor(PackedTensor):
    def __init__(self, info: TensorInfo, parts: tuple[str, ...], codes: str, scale: TensorInfo,
                 zero: str | None, block: tuple[int, int], factor: float) -> None:
        super().__init__(info, parts)
        self.codes, self.scale, self.zero, self.block, self.factor = codes, scale, zero, block, factor

    def read(self, stored: StoredTensors, rows: slice) -> torch.Tensor:
        import torch

        bn, bk = self.block
        first, last = rows.start // bn, (rows.stop - 1) // bn + 1
        row_of = torch.arange(rows.start, rows.stop) // bn - first
        col_of = torch.arange(self.info.shape[1]) // bk
        w = stored.get(self.codes, rows=rows).float()
        if self.zero is not None:
            w = w - self._grid(stored, self.zero, first, last)[row_of][:, col_of]
        scale = self._grid(stored, self.scale.name, first, last)[row_of][:, col_of]
        return w * scale * self.factor if self.factor != 1 else w * scale

    def _grid(self, stored: StoredTensors, name: str, first: int, last: int) -> torch.Tensor:
        if self.scale.numel == 1:
            return stored.get(name).float().reshape(1, 1)
        return stored.get(name, rows=slice(first, last)).float().reshape(last - first, -1)


def scale_block(weight: TensorInfo, scale: TensorInfo, configured: Any,
                where: Path) -> tuple[int, int]:
    """The block of the weight that one scale covers, from the config or the scale's shape."""
    n, k = weight.shape
    if scale.numel == 1:
        return n, k
    grid = scale.shape if scale.ndim == 2 else (scale.numel, 1)
    if configured:
        bn, bk = _block(configured, weight.name, where)
        if (-(-n // bn), -(-k // bk)) != tuple(grid):
            raise inconsistent(where, weight.name, f"scales {list(scale.shape)} do not fit "
                               f"{bn}x{bk} blocks of a {n}x{k} weight")
        return bn, bk
    if grid[0] == n and k % grid[1] == 0:
        return 1, k // grid[1]
    raise inconsistent(where, weight.name, f"cannot tell which block of the {n}x{k} weight each of "
                       f"the scales {list(scale.shape)} covers (no block size in config.json)")


def _block(configured: Any, weight: str, where: Path) -> tuple[int, int]:
    """The config's block size: ``[rows, columns]`` (or one size for both) of positive integers."""
    if (isinstance(configured, (list, tuple)) and len(configured) in (1, 2)
            and all(type(v) is int and v > 0 for v in configured)):
        return configured[0], configured[-1]
    raise TensorguardError(f"{config_file(where)}: packed weight {weight!r}: block size "
                           f"{shown(configured)} in config.json is not [rows, columns] of positive integers")


def scaled_tensor(infos: Mapping[str, TensorInfo], weight: str, scale: str, zero: str | None, *,
                  block: Any, factor: float, where: Path,
                  extra: Sequence[str] = ()) -> ScaledTensor:
    """Plan one scaled weight; ``extra`` names stored tensors it also consumes (activation scales)."""
    codes, scale_info = infos[weight], infos[scale]
    if codes.ndim != 2 or codes.dtype not in CODE_DTYPES:
        raise TensorguardError(f"{where}: packed weight {weight!r} must be a 2-D float8 or int8 "
                               f"tensor, not {codes.dtype} {list(codes.shape)}")
    expect(scale_info, weight, where, dtypes=FLOAT_DTYPES)
    zero_info = infos.get(zero) if zero else None
    grid = scale_block(codes, scale_info, block, where)
    if zero_info is not None and zero_info.shape != scale_info.shape:
        raise inconsistent(where, weight, f"zero points {list(zero_info.shape)} and scales "
                           f"{list(scale_info.shape)} differ")
    scheme, bits = CODE_DTYPES[codes.dtype]
    parts = [codes, scale_info] + ([zero_info] if zero_info else []) + [infos[e] for e in extra
                                                                        if e in infos]
    group = None if scale_info.numel == 1 else grid
    info = TensorInfo(weight, codes.shape, scheme, codes.shard,
                      quantization(scheme, bits, parts, codes.numel, group))
    return ScaledTensor(info, tuple(p.name for p in parts), weight, scale_info,
                        zero_info.name if zero_info else None, grid, factor)
