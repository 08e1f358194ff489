"""A model source: the tensors of a model across its files, listed from headers, read on demand."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tensorguard.errors import TensorguardError
from tensorguard.loading.header import TensorInfo, read_header
from tensorguard.loading.layouts import Layout, Resolved
from tensorguard.loading.quantized import packed_format

if TYPE_CHECKING:
    import torch

#: Default entries per streamed row block (16 MB as float32): small enough for any laptop, large
#: enough that per-block overhead is negligible.
BLOCK_ELEMENTS = 1 << 22


class ModelSource:
    """Tensors of one model in plain name order; data is memory-mapped and read one at a time."""

    def __init__(self, resolved: Resolved, name: str | None = None) -> None:
        self.layout: Layout = resolved.layout
        self.root: Path = resolved.root
        self.shards: tuple[Path, ...] = resolved.shards
        self.name: str = name or resolved.name
        infos: dict[str, TensorInfo] = {}
        for shard in resolved.shards:
            for tname, info in read_header(shard).items():
                if tname in infos:
                    raise TensorguardError(
                        f"{shard}: tensor {tname!r} also appears in {infos[tname].shard.name}")
                infos[tname] = info
        if resolved.weight_map:
            for tname, shard in resolved.weight_map.items():
                if tname not in infos or infos[tname].shard != shard:
                    raise TensorguardError(
                        f"{shard}: the index lists tensor {tname!r} in this shard, "
                        "but its header has no such tensor")
        self.tensors: dict[str, TensorInfo] = dict(sorted(infos.items()))
        self._handles: dict[Path, Any] = {}
        self._current: str | None = None
        self._check_readable()

    def _check_readable(self) -> None:
        fmt = packed_format(self.tensors)
        if fmt:
            raise TensorguardError(
                f"{self.root}: {fmt} packed-integer quantized checkpoint; tensorguard reads "
                "F32/F16/BF16/F8 weights only (dequantize it first)")
        if not self.matrices():
            raise TensorguardError(f"{self.root}: no 2-D floating-point weight tensors in this model")

    @property
    def total_params(self) -> int:
        """Number of elements over every tensor of every shard."""
        return sum(info.numel for info in self.tensors.values())

    def matrices(self) -> list[TensorInfo]:
        """The 2-D floating-point tensors, in plain name order."""
        return [i for i in self.tensors.values() if i.ndim == 2 and i.is_float]

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise TensorguardError(f"{self.name}: no tensor named {name!r}") from None

    def _handle(self, shard: Path) -> Any:
        if shard not in self._handles:
            from safetensors import safe_open

            self._handles[shard] = safe_open(str(shard), framework="pt", device="cpu")
        return self._handles[shard]

    def _reader(self, name: str) -> Any:
        """The open shard holding ``name``. Moving on to another tensor unmaps the shards, so the
        pages of tensors already read stop counting as resident memory (reopening is cheap)."""
        if name != self._current:
            self._handles.clear()
            self._current = name
        return self._handle(self.info(name).shard)

    def read(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read one tensor (CPU); cast to ``dtype`` when given, e.g. ``torch.float32``."""
        tensor = self._reader(name).get_tensor(name)
        return tensor if dtype is None else tensor.to(dtype)

    def read_rows(self, name: str, start: int, stop: int,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read rows ``start:stop`` of a tensor without reading the rest."""
        tensor = self._reader(name).get_slice(name)[start:stop]
        return tensor if dtype is None else tensor.to(dtype)

    def row_blocks(self, name: str, *, max_elements: int = BLOCK_ELEMENTS, start: int = 0,
                   stop: int | None = None,
                   dtype: torch.dtype | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Rows ``start:stop`` (default: all) of a tensor as ``(first_row, block)`` pairs of at most
        ``max_elements`` entries each (at least one row): the one way every command streams a matrix."""
        shape = self.info(name).shape
        stop = shape[0] if stop is None else min(stop, shape[0])
        step = max(1, max_elements // max(1, math.prod(shape[1:])))
        for first in range(start, stop, step):
            yield first, self.read_rows(name, first, min(first + step, stop), dtype)

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> ModelSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ModelSource(name={self.name!r}, layout={self.layout.value!r}, "
                f"shards={len(self.shards)}, tensors={len(self.tensors)})")
