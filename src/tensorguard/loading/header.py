"""Strict, header-only parsing of one safetensors file (reads no tensor data).

Everything the safetensors library enforces when it opens a file is checked here first, so that a
bad file is refused with a one-line message naming the tensors and offsets involved instead of a
``SafetensorError`` from deep inside a read: a bounded header that is UTF-8 JSON, unique names and
fields, ``__metadata__`` a map of strings, each tensor's dtype, shape and offsets consistent, and
the tensors covering the data section exactly, in order, with no overlap, gap or trailing bytes.
Every check costs a few operations per tensor (a sort included); no data byte is read.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorguard.errors import TensorguardError
from tensorguard.inputs import regular_file
from tensorguard.loading import bytesource
from tensorguard.loading.formats import Quantization

#: Bytes per element of every safetensors dtype tensorguard accepts.
ITEMSIZE: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
#: Floating dtypes whose tensors are weights that can be read as float32.
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
INTEGER_DTYPES = frozenset({"I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64"})

_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_MAX_DIMS = 64  # numpy's limit; real weights have 1 to 5
_MAX_BYTES = 1 << 63  # torch sizes are int64; safetensors refuses sizes that overflow 64 bits
_METADATA = "__metadata__"
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
    #: Where its bytes are in ``shard`` (absolute offsets; safetensors only).
    span: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)

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


def _corrupt(path: Path, why: str) -> TensorguardError:
    return TensorguardError(f"{path}: corrupt header: {why}")


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate the header of ``path``; raise a one-line error naming the problem."""
    try:
        size = regular_file(path).stat().st_size
        bytesource.need(path, 0, 8)
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
            bytesource.need(path, 8, length)
            raw = fh.read(length)
    except OSError as exc:
        raise TensorguardError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not raw.lstrip().startswith(b"{"):
        raise _not_safetensors(path, _foreign(prefix) or "the header does not start with a JSON object")
    header = _parse(path, raw)
    if not isinstance(header, dict):
        raise _corrupt(path, "expected a JSON object")
    return _validate(path, header, data_size=size - 8 - length, data_start=8 + length)


def _parse(path: Path, raw: bytes) -> Any:
    """The header's JSON (UTF-8 only, as safetensors reads it), refusing duplicate keys."""
    try:
        text = raw.decode("utf-8")
        header = json.loads(text)
    except UnicodeDecodeError:
        raise _corrupt(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"not valid JSON ({exc})") from None
    except ValueError:  # an integer of thousands of digits (Python's conversion limit)
        raise _corrupt(path, "a number too long to read") from None
    except RecursionError:
        raise _corrupt(path, "JSON nested too deeply") from None
    if isinstance(header, dict) and (duplicate := _duplicate_key(text, header)) is not None:
        raise _corrupt(path, f"{duplicate!r} appears twice in one object (a tensor name or field "
                             "given twice)")
    return header


def _duplicate_key(text: str, header: dict[str, Any]) -> str | None:
    """A key given twice in one object of the header (``json.loads`` keeps the last silently).

    Every key of a header is followed by ``":``, so when that count equals the keys parsed (top
    level, entries, metadata) none was dropped; only when they disagree (a duplicate, a space
    before a colon, a quote and colon inside a name, deeper objects) is the header parsed again
    with a hook on every object, which is slower."""
    parsed = len(header) + sum(len(v) for v in header.values() if isinstance(v, dict))
    if text.count('":') == parsed:
        return None
    found: list[str] = []

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out and not found:
                found.append(key)
            out[key] = value
        return out

    json.loads(text, object_pairs_hook=unique)
    return found[0] if found else None


def _validate(path: Path, header: dict[str, Any], data_size: int,
              data_start: int) -> dict[str, TensorInfo]:
    _check_metadata(path, header.get(_METADATA))
    infos: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == _METADATA:
            continue
        info, start, stop = _entry(path, name, entry, data_size)
        infos[name] = TensorInfo(info.name, info.shape, info.dtype, path,
                                 span=(data_start + start, data_start + stop))
        spans.append((start, stop, name))
    _check_coverage(path, spans, data_size)
    return infos


def _check_metadata(path: Path, metadata: Any) -> None:
    """``__metadata__`` is absent, null, or a map of strings to strings (safetensors' rule)."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise _corrupt(path, f"__metadata__ is a {type(metadata).__name__}, not a map of strings")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _corrupt(path, f"__metadata__ value of {key!r} is a {type(value).__name__}, "
                                 "not a string")
        if not (_unicode(key) and _unicode(value)):
            raise _corrupt(path, f"__metadata__ entry {key!r} is not valid Unicode text")


def _unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: JSON's escapes let lone surrogates through, which
    safetensors refuses and which cannot be printed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _entry(path: Path, name: str, entry: Any, data_size: int) -> tuple[TensorInfo, int, int]:
    """One tensor's entry checked on its own: its info and its byte range in the data section.
    (Plain loops, no generators: this runs once per tensor of every shard a command opens.)"""
    where = f"tensor {name!r}"
    if not (name.isascii() or _unicode(name)):
        raise _corrupt(path, f"{where}: the name is not valid Unicode text")
    if not isinstance(entry, dict) or "dtype" not in entry or "shape" not in entry \
            or "data_offsets" not in entry:
        raise _corrupt(path, f"{where}: not an entry with dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in ITEMSIZE:
        shown = dtype if isinstance(dtype, str) and len(dtype) <= 40 else _short(dtype)
        raise TensorguardError(
            f"{path}: {where}: unsupported dtype {shown} (supported: {', '.join(ITEMSIZE)})")
    if type(shape) is not list or len(shape) > _MAX_DIMS:
        raise _corrupt(path, f"{where}: bad shape {_short(shape)}")
    nbytes = ITEMSIZE[dtype]
    for d in shape:  # every partial product is bounded, as safetensors checks it for overflow
        if type(d) is not int or d < 0:
            raise _corrupt(path, f"{where}: bad shape {_short(shape)}")
        nbytes *= d
        if nbytes >= _MAX_BYTES:
            raise _corrupt(path, f"{where}: shape {shape} of {dtype} is too large to exist")
    if type(offsets) is not list or len(offsets) != 2:
        raise _corrupt(path, f"{where}: bad data_offsets {_short(offsets)}")
    start, stop = offsets
    if type(start) is not int or type(stop) is not int or not 0 <= start <= stop:
        raise _corrupt(path, f"{where}: bad data_offsets {_short(offsets)}")
    if stop - start != nbytes:
        raise _corrupt(path, f"{where}: data_offsets span {stop - start} bytes, shape {shape} of "
                             f"{dtype} needs {nbytes}")
    if stop > data_size:
        raise TensorguardError(
            f"{path}: {where}: data_offsets {offsets} run past the end of the file "
            f"(data section is {data_size} bytes; truncated download?)")
    return TensorInfo(name, tuple(shape), dtype, path), start, stop


def _check_coverage(path: Path, spans: list[tuple[int, int, str]], data_size: int) -> None:
    """The tensors, in offset order, cover the data section exactly: each starts where the one
    before ends (no overlap, no gap) and the last ends with the file (no trailing bytes)."""
    spans.sort()
    end, before = 0, "the start of the data"
    for start, stop, name in spans:
        this = f"tensor {name!r} (data_offsets [{start}, {stop}])"
        if start < end:
            raise _corrupt(path, f"{this} overlaps {before}")
        if start > end:
            raise _corrupt(path, f"bytes {end}-{start} of the data section belong to no tensor (a "
                                 f"gap between {before} and {this})")
        end, before = stop, this
    if end != data_size:
        raise _corrupt(path, f"{data_size - end} trailing bytes after the last tensor (the tensors "
                             f"end at {end}, the data section is {data_size} bytes)")


def _short(value: Any) -> str:
    """A header value for a message, cut to a readable length."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
