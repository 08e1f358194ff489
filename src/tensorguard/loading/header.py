"""Strict, header-only parsing of one safetensors file (reads no tensor data)."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from tensorguard.errors import TensorguardError
from tensorguard.loading.formats import Quantization

#: Bytes per element of every safetensors dtype tensorguard accepts.
ITEMSIZE: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
#: Floating dtypes whose tensors are weights that can be read as float32.
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})

_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_FOREIGN_MAGIC = {
    b"PK\x03\x04": "a zip archive (a PyTorch .bin/.pt checkpoint?)",
    b"\x80": "a Python pickle (a PyTorch .bin/.pt checkpoint?)",
    b"GGUF": "a GGUF file",
    b"\x89HDF": "an HDF5 file (a Keras/TF checkpoint?)",
    b"{": "a JSON file, not model weights",
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as its header describes it.

    A quantized weight is one logical float tensor: ``dtype`` names its scheme (``Q4_K``,
    ``gptq-int4`` ...), ``quant`` describes it, and reads return it dequantized to float32.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    shard: Path
    quant: Quantization | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES or self.quant is not None


def _foreign(prefix: bytes) -> str | None:
    """What a file that is not safetensors looks like, from its first bytes."""
    what = next((w for magic, w in _FOREIGN_MAGIC.items() if prefix.startswith(magic)), None)
    return f"looks like {what}" if what else None


def _not_safetensors(path: Path, why: str) -> TensorguardError:
    return TensorguardError(f"{path}: not a safetensors file ({why})")


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate the header of ``path``; raise a one-line error naming the problem."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _not_safetensors(path, f"only {size} bytes long")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER or length > size - 8:
                if foreign := _foreign(prefix):
                    raise _not_safetensors(path, foreign)
                if length > _MAX_HEADER:
                    raise _not_safetensors(path, f"header length field {length} is implausible")
                raise TensorguardError(
                    f"{path}: truncated: header length {length} exceeds the file size {size}")
            raw = fh.read(length)
    except OSError as exc:
        raise TensorguardError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not raw.lstrip().startswith(b"{"):
        raise _not_safetensors(path, _foreign(prefix) or "the header does not start with a JSON object")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorguardError(f"{path}: corrupt header: not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise TensorguardError(f"{path}: corrupt header: expected a JSON object")
    return _validate(path, header, data_size=size - 8 - length)


def _validate(path: Path, header: dict, data_size: int) -> dict[str, TensorInfo]:
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise TensorguardError(f"{where}: corrupt header entry (needs dtype, shape, data_offsets)")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in ITEMSIZE:
            raise TensorguardError(
                f"{where}: unsupported dtype {dtype} (supported: {', '.join(ITEMSIZE)})")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise TensorguardError(f"{where}: corrupt header: bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise TensorguardError(f"{where}: corrupt header: bad data_offsets {offsets!r}")
        nbytes = math.prod(shape) * ITEMSIZE[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise TensorguardError(
                f"{where}: corrupt header: data_offsets span {offsets[1] - offsets[0]} bytes, "
                f"shape {shape} of {dtype} needs {nbytes}")
        if offsets[1] > data_size:
            raise TensorguardError(
                f"{where}: data_offsets {offsets} run past the end of the file "
                f"(data section is {data_size} bytes; truncated download?)")
        infos[name] = TensorInfo(name, tuple(shape), dtype, path)
    return infos
