"""A model source: the tensors of a model across its files, listed from headers, read on demand.

Where the tensors come from is a ``TensorStore``: safetensors (plain or packed-quantized), GGUF,
or a LoRA adapter over a base model. ``ModelSource`` is the one interface every command uses.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from tensorguard.errors import TensorguardError
from tensorguard.loading.claims import GgufClaims
from tensorguard.loading.formats import WeightFormat
from tensorguard.loading.header import TensorInfo
from tensorguard.loading.layouts import Layout, Resolved

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Default entries per streamed row block (16 MB as float32): small enough for any laptop, large
#: enough that per-block overhead is negligible.
BLOCK_ELEMENTS = 1 << 22


class TensorStore(Protocol):
    """The tensors of one model as its files hold them (Hugging Face names, plain name order)."""

    @property
    def format(self) -> WeightFormat: ...

    @property
    def tensors(self) -> dict[str, TensorInfo]: ...

    @property
    def claims(self) -> GgufClaims | None: ...

    def read(self, name: str, rows: slice | None, dtype: torch.dtype | None) -> torch.Tensor:
        """A tensor (``rows``: ``start:stop`` of its first dimension only) cast to ``dtype``, or
        when ``None`` floats as stored and quantized weights dequantized to float32."""
        ...

    def release(self) -> None:
        """Unmap or close the files (reads reopen them) and drop anything kept."""
        ...


#: The store class for each layout, as ``module:class`` under ``tensorguard.loading``, imported on
#: first use so that reading safetensors never imports gguf (a LoRA adapter also needs its base
#: model: see ``LoraSource``).
STORES: dict[Layout, str] = {
    Layout.FILE: "safetensors_store:SafetensorsStore", Layout.DIRECTORY: "safetensors_store:SafetensorsStore",
    Layout.INDEXED_SHARDS: "safetensors_store:SafetensorsStore",
    Layout.SHARDS: "safetensors_store:SafetensorsStore",
    Layout.GGUF: "gguf:GgufStore", Layout.GGUF_SPLIT: "gguf:GgufStore",
}


def open_store(resolved: Resolved) -> TensorStore:
    """The store reading ``resolved``'s files."""
    module, cls = STORES[resolved.layout].split(":")
    store: Callable[[Resolved], TensorStore] = getattr(
        importlib.import_module(f"tensorguard.loading.{module}"), cls)
    return store(resolved)


class ModelSource:
    """Tensors of one model in plain name order, read one at a time (or by rows).

    ``format`` says how the weights are stored; ``info(name).quant`` how each quantized weight
    is; ``claims`` what a GGUF file's metadata says (``None`` otherwise).
    """

    def __init__(self, resolved: Resolved, name: str | None = None,
                 store: TensorStore | None = None) -> None:
        self.layout: Layout = resolved.layout
        self.root: Path = resolved.root
        self.shards: tuple[Path, ...] = resolved.shards
        self.name: str = name or resolved.name
        #: The remote reference the files were read from, pinned to its commit (``None``: local).
        self.origin: str | None = None
        self._store = store if store is not None else open_store(resolved)
        self.format: WeightFormat = self._store.format
        self.claims: GgufClaims | None = self._store.claims
        self.tensors: dict[str, TensorInfo] = self._store.tensors
        self._current: str | None = None
        if not self.matrices():
            where = self.shards[0] if len(self.shards) == 1 else self.root
            raise TensorguardError(f"{where}: no 2-D floating-point weight tensors in this model")

    @property
    def total_params(self) -> int:
        """Number of elements over every (logical) tensor of every file."""
        return sum(info.numel for info in self.tensors.values())

    def matrices(self) -> list[TensorInfo]:
        """The 2-D floating-point (or dequantizable) tensors, in plain name order. A matrix with no
        entries (a zero dimension) is not a weight: nothing can be probed or measured in it."""
        return [i for i in self.tensors.values() if i.ndim == 2 and i.is_float and i.numel]

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise TensorguardError(f"{self.name}: no tensor named {name!r}") from None

    def _select(self, name: str) -> None:
        """Check ``name``. Moving on to another tensor releases the files, so the pages of tensors
        already read stop counting as resident memory (reopening is cheap)."""
        self.info(name)
        if name != self._current:
            self._store.release()
            self._current = name

    def read(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read one tensor (CPU); cast to ``dtype`` when given, e.g. ``torch.float32``. Quantized
        weights come dequantized to float32."""
        self._select(name)
        return self._store.read(name, None, dtype)

    def read_rows(self, name: str, start: int, stop: int,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read rows ``start:stop`` of a tensor without reading the rest."""
        self._select(name)
        rows = self.info(name).shape[0]
        return self._store.read(name, slice(*slice(start, stop).indices(rows)[:2]), dtype)

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
        self._store.release()
        self._current = None
        if self.origin is not None:  # a remote model: what reading it has cost (--verbose)
            from tensorguard.loading.mirror import traffic

            log.info("%s", traffic(self.origin).describe(self.origin))

    def __enter__(self) -> ModelSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ModelSource(name={self.name!r}, layout={self.layout.value!r}, "
                f"format={self.format.value!r}, shards={len(self.shards)}, "
                f"tensors={len(self.tensors)})")
