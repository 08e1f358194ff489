"""Where the bytes of a model file come from: the readers say which ranges they are about to read.

A local file has every byte already, so ``need`` does nothing for it. A file mirrored from a
remote model (``loading.mirror``) is a sparse local file whose ranges are fetched on demand: its
``ByteSource`` is attached to the mirror's path, and ``need(path, offset, length)`` fetches the
range before the reader touches it. This is the only hook the readers call (safetensors headers and
tensor rows, GGUF headers and rows, the catalogue's sample bytes, a tokenizer), so each reads only
the ranges it uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tensorguard.loading.header import TensorInfo


class ByteSource(Protocol):
    """The bytes of one file, fetched on demand."""

    @property
    def size(self) -> int: ...

    def need(self, offset: int, length: int) -> None:
        """Make bytes ``offset:offset+length`` of the file readable (clipped to its size)."""
        ...


_ATTACHED: dict[str, ByteSource] = {}


def _key(path: Path | str) -> str:
    return os.path.abspath(path)


def attach(path: Path, source: ByteSource) -> None:
    """Serve ``path``'s bytes from ``source`` from now on."""
    _ATTACHED[_key(path)] = source


def source_of(path: Path | str) -> ByteSource | None:
    """The source attached to ``path`` (``None`` for a plain local file)."""
    return _ATTACHED.get(_key(path)) if _ATTACHED else None


def need(path: Path | str, offset: int, length: int) -> None:
    """Bytes ``offset:offset+length`` of ``path`` are about to be read."""
    source = source_of(path)
    if source is not None and length > 0:
        source.need(offset, length)


def need_all(path: Path | str) -> None:
    """The whole of ``path`` is about to be read (a small side file such as a tokenizer)."""
    source = source_of(path)
    if source is not None:
        source.need(0, source.size)


def need_rows(info: TensorInfo, rows: slice | None = None) -> None:
    """Rows ``rows`` (all when ``None``) of a safetensors tensor are about to be read."""
    if source_of(info.shard) is None:
        return
    start, stop = info.span
    if rows is not None and info.shape and info.shape[0]:
        row_bytes = (stop - start) // info.shape[0]
        first, last, _ = rows.indices(info.shape[0])
        start, stop = start + first * row_bytes, start + max(first, last) * row_bytes
    need(info.shard, start, stop - start)
