"""What every packed-weight format shares: the reader protocol, bit unpacking, shape checks.

A packed format turns the stored tensors of one weight (codes, scales, zeros, ...) into ONE logical
float tensor under the weight's name, of the logical ``(out, in)`` shape, read by row blocks and
dequantized to float32 with the format's documented formula.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tensorguard.errors import TensorguardError
from tensorguard.loading.checks import integer
from tensorguard.loading.formats import Quantization, WeightFormat
from tensorguard.loading.header import ITEMSIZE, TensorInfo

if TYPE_CHECKING:
    import torch


class StoredTensors(Protocol):
    """Read access to the tensors as stored in the safetensors files."""

    def get(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        """A stored tensor, or rows (first dimension) and/or columns (second) of it."""
        ...


class PackedTensor(ABC):
    """One logical weight assembled from several stored tensors (``parts``)."""

    def __init__(self, info: TensorInfo, parts: tuple[str, ...]) -> None:
        self.info = info
        self.parts = parts

    @abstractmethod
    def read(self, stored: StoredTensors, rows: slice) -> torch.Tensor:
        """Rows ``rows`` (a plain ``start:stop`` within the shape) of the weight as float32."""


class PackedFormat(ABC):
    """A packed-weight format: recognised from tensor names and ``config.json``, then planned."""

    format: WeightFormat
    #: ``quantization_config.quant_method`` values that announce this format.
    quant_methods: tuple[str, ...] = ()
    #: Stored-tensor name endings that reveal the format without a config.
    markers: tuple[str, ...] = ()

    def recognises(self, infos: Mapping[str, TensorInfo], qconfig: Mapping[str, Any]) -> bool:
        """Whether the checkpoint is in this format: its markers are present and the config's
        ``quant_method``, when there is one, is this format's."""
        method = qconfig.get("quant_method")
        if method is not None and method not in self.quant_methods:
            return False
        return any(name.endswith(m) for name in infos for m in self.markers)

    @abstractmethod
    def plan(self, infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
             stored: StoredTensors) -> dict[str, PackedTensor]:
        """The logical weights, by name, each with the stored tensors it consumes. ``stored`` is
        only for the few formats that keep a weight's shape in a tiny tensor (bitsandbytes'
        ``quant_state``, compressed-tensors' ``weight_shape``)."""


def config_file(where: Path) -> Path:
    """The file a setting comes from, named in errors about it (``where`` is the model's folder)."""
    return where / "config.json"


def quant_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json``'s ``quantization_config`` (empty when absent or malformed)."""
    qconfig = config.get("quantization_config")
    return dict(qconfig) if isinstance(qconfig, dict) else {}


def require(infos: Mapping[str, TensorInfo], name: str, weight: str, what: str,
            where: Path) -> TensorInfo:
    """The stored tensor ``name``, or the one-line error for a packed weight missing a part."""
    info = infos.get(name)
    if info is None:
        raise TensorguardError(f"{where}: packed weight {weight!r} has no {what} ({name!r} is missing)")
    return info


def expect(part: TensorInfo, weight: str, where: Path, *, dtypes: Collection[str] = (),
           ndim: Collection[int] = ()) -> TensorInfo:
    """``part`` if its dtype and number of dimensions are among those given (empty: any)."""
    if (dtypes and part.dtype not in dtypes) or (ndim and part.ndim not in ndim):
        wanted = " or ".join(filter(None, (
            "/".join(sorted(dtypes)), " or ".join(f"{n}-D" for n in sorted(ndim)))))
        raise TensorguardError(f"{part.shard}: packed weight {weight!r}: {part.name!r} is {part.dtype} "
                               f"{list(part.shape)}, not {wanted}")
    return part


def stored_bits(parts: list[TensorInfo]) -> int:
    """Bits stored by these tensors."""
    return sum(p.numel * ITEMSIZE[p.dtype] * 8 for p in parts)


def quantization(scheme: str, bits: int, parts: list[TensorInfo], numel: int,
                 group: tuple[int, int] | None) -> Quantization:
    """Describe a quantized weight; bits per weight count every stored part."""
    return Quantization(scheme, bits, round(stored_bits(parts) / max(1, numel), 4), group)


def group_size(configured: Any, inputs: int, groups: int, where: Path) -> int:
    """Inputs per group: the config's ``group_size`` (-1 or 0: the whole row), else from the shapes."""
    if configured is None:
        return max(1, inputs // max(1, groups))
    size = integer(configured, "quantization_config's group_size", config_file(where), minimum=-1)
    return max(1, inputs) if size <= 0 else size


def inconsistent(where: Path, weight: str, detail: str) -> TensorguardError:
    return TensorguardError(f"{where}: packed weight {weight!r}: inconsistent group sizes: {detail}")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A stored integer tensor as numpy (unsigned 32-bit words viewed through int32)."""
    import torch

    if tensor.dtype == torch.uint32:
        return tensor.view(torch.int32).numpy().view(np.uint32)
    return tensor.numpy()


def unpack(words: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Unpack ``bits``-wide codes packed least-significant first into integer words along
    ``axis``, as one little-endian bit stream (so 3-bit codes may straddle two words).

    Returns int32 codes; their count along ``axis`` is the words' bit count over ``bits``.
    """
    words = np.ascontiguousarray(np.moveaxis(words, axis, -1))
    width = words.dtype.itemsize * 8
    if width % bits == 0:  # whole codes per word: shift and mask
        shifts = np.arange(0, width, bits, dtype=np.uint32)
        codes = (words.astype(f"<u{words.dtype.itemsize}")[..., None] >> shifts) & ((1 << bits) - 1)
        codes = codes.reshape(*words.shape[:-1], -1)
    else:  # a bit stream: expand every bit, regroup by ``bits``
        stream = np.unpackbits(words.astype(f"<u{words.dtype.itemsize}").view(np.uint8), axis=-1,
                               bitorder="little")
        n = stream.shape[-1] // bits
        stream = stream[..., :n * bits].reshape(*words.shape[:-1], n, bits).astype(np.int32)
        codes = stream @ (1 << np.arange(bits, dtype=np.int32))
    return np.moveaxis(codes.astype(np.int32), -1, axis)


def packed_span(start: int, stop: int, bits: int, word_bits: int = 32) -> tuple[slice, int]:
    """Which words hold codes ``start:stop`` of a bit stream, and the first code they hold.

    Codes come in chunks of ``lcm(bits, word_bits)`` bits that start on a word boundary.
    """
    chunk_bits = math.lcm(bits, word_bits)
    per_chunk, words_per_chunk = chunk_bits // bits, chunk_bits // word_bits
    first, last = start // per_chunk, -(-stop // per_chunk)
    return slice(first * words_per_chunk, last * words_per_chunk), first * per_chunk
