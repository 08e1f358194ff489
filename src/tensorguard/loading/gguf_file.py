"""Header-only parsing of one GGUF file: its metadata and tensor directory (reads no tensor data).

The format's constants (value types, tensor types, block sizes) come from the ``gguf`` package.
The parser is tensorguard's own: ``gguf.GGUFReader`` decodes every vocabulary string and merge
into numpy arrays one at a time (4 s for SmolLM2-135M's header on a 2-core machine), while only the
lengths of those arrays matter here. Long arrays are skipped and only their length is kept.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

from tensorguard.errors import TensorguardError
from tensorguard.loading import bytesource

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
#: Arrays longer than this (vocabularies, merges, scores), and arrays inside arrays, are skipped;
#: only their length is kept.
MAX_KEPT_ARRAY = 64
_MAX_DIMS = 4  # GGML_MAX_DIMS
#: Arrays of arrays deeper than this are refused (real files nest one level at most).
MAX_ARRAY_DEPTH = 8
_SCALARS: dict[int, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"), GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"), GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"), GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"), GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: struct.Struct("<Q"), GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_U32, _U64 = _SCALARS[GGUFValueType.UINT32], _SCALARS[GGUFValueType.UINT64]


@dataclass(frozen=True)
class ArrayLength:
    """A metadata array too long to keep (a vocabulary, merges): its length only."""

    count: int


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of the directory. ``shape`` is in row-major (numpy) order, i.e. GGUF's ``ne``
    reversed; ``offset`` is absolute in the file."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def row_bytes(self) -> int:
        """Bytes per index of the first dimension (GGUF rows are whole blocks)."""
        return self.nbytes // self.shape[0] if self.shape and self.shape[0] else self.nbytes


@dataclass(frozen=True)
class GgufHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[GgufTensor, ...]


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", tuple: "an array",
          ArrayLength: "a long array"}


def _is(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _kind(value: object) -> str:
    return next((name for kind, name in _KINDS.items() if _is(value, kind)), type(value).__name__)


def metadata_value(metadata: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], path: Path, *,
                   items: type | None = None) -> Any:
    """The metadata value of ``key`` (``None`` when absent), checked to be one of ``kinds`` (a bool
    is not an integer); an array (``tuple``) is checked to hold ``items`` only. A value of another
    type is a one-line error naming the file, the key and both types."""
    value = metadata.get(key)
    if value is None:
        return None
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not any(_is(value, k) for k in kinds):
        raise TensorguardError(f"{path}: GGUF metadata {key!r} is {_kind(value)}, expected "
                               f"{' or '.join(_KINDS[k] for k in kinds)}")
    if items is not None and isinstance(value, tuple):
        bad = next((v for v in value if not _is(v, items)), None)
        if bad is not None:
            raise TensorguardError(f"{path}: GGUF metadata {key!r} is an array holding {_kind(bad)}, "
                                   f"expected {_KINDS[items].partition(' ')[2]}s only")
    return value


class _Truncated(Exception):
    pass


class _Cursor:
    """Sequential little-endian reads from a buffer; running off its end raises ``_Truncated``.
    Bytes past ``ready`` are asked of ``fetch`` before they are read (a remote file's header is
    fetched as it is parsed, in doubling chunks; skipped arrays are not fetched)."""

    def __init__(self, buf: Any, size: int, keep: frozenset[str] = frozenset(),
                 fetch: bytesource.ByteSource | None = None) -> None:
        self.buf, self.size, self.pos, self.keep = buf, size, 0, keep
        self.fetch, self.ready = fetch, size if fetch is None else 0

    def _ensure(self, end: int) -> None:
        if end > self.ready and self.fetch is not None:
            stop = min(self.size, max(end, 2 * self.ready, 1 << 16))
            self.fetch.need(self.ready, stop - self.ready)
            self.ready = stop

    def unpack(self, fmt: struct.Struct) -> Any:
        if self.pos + fmt.size > self.size:
            raise _Truncated
        self._ensure(self.pos + fmt.size)
        (value,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return value

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Truncated
        self.pos += n

    def string(self) -> str:
        n = self.unpack(_U64)
        start = self.pos
        self.skip(n)
        self._ensure(self.pos)
        return bytes(self.buf[start:self.pos]).decode("utf-8", errors="replace")

    def value(self, vtype: int, key: str, path: Path, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype != GGUFValueType.ARRAY:
            raise TensorguardError(f"{path}: corrupt GGUF header: metadata {key!r} has unknown "
                                   f"value type {vtype}")
        if depth >= MAX_ARRAY_DEPTH:
            raise TensorguardError(f"{path}: corrupt GGUF header: metadata {key!r} nests arrays "
                                   f"more than {MAX_ARRAY_DEPTH} deep")
        itype, count = self.unpack(_U32), self.unpack(_U64)
        if depth == 0 and (count <= MAX_KEPT_ARRAY or key in self.keep):  # nested: length only
            return tuple(self.value(itype, key, path, depth + 1) for _ in range(count))
        if itype in _SCALARS:
            self.skip(count * _SCALARS[itype].size)
        else:  # each element takes at least 8 bytes, so this ends within the file's size
            for _ in range(count):
                self.value(itype, key, path, depth + 1)
        return ArrayLength(count)


def read_gguf_header(path: Path, *, keep: frozenset[str] = frozenset()) -> GgufHeader:
    """Parse and check the header of ``path``; raise a one-line error naming the problem. The
    metadata arrays named in ``keep`` are decoded whatever their length (a vocabulary)."""
    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            if size < 24:
                raise TensorguardError(f"{path}: truncated GGUF file ({size} bytes)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf, size, keep, bytesource.source_of(path))
    except OSError as exc:
        raise TensorguardError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse(path: Path, buf: Any, size: int, keep: frozenset[str],
           fetch: bytesource.ByteSource | None) -> GgufHeader:
    cur = _Cursor(buf, size, keep, fetch)
    cur._ensure(4)
    if bytes(buf[:4]) != MAGIC:
        raise TensorguardError(f"{path}: not a GGUF file (no GGUF magic)")
    cur.pos = 4
    version = cur.unpack(_U32)
    _check_version(path, version)
    try:
        tensor_count, kv_count = cur.unpack(_U64), cur.unpack(_U64)
        if tensor_count > size or kv_count > size:  # each entry takes bytes: the loops end with the file
            raise TensorguardError(f"{path}: corrupt GGUF header: {tensor_count} tensors and "
                                   f"{kv_count} metadata entries cannot fit in {size} bytes")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = cur.string()
            metadata[key] = cur.value(cur.unpack(_U32), key, path)
        raw = [_tensor_entry(path, cur) for _ in range(tensor_count)]
    except _Truncated:
        raise TensorguardError(f"{path}: truncated GGUF file: the header runs past the end of "
                               f"the file ({size} bytes; interrupted download?)") from None
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise TensorguardError(f"{path}: corrupt GGUF header: general.alignment {alignment!r} "
                               "is not a power of two")
    data_start = -(-cur.pos // alignment) * alignment
    tensors = tuple(_locate(path, entry, data_start, size, alignment) for entry in raw)
    _check_overlaps(path, tensors)
    return GgufHeader(path, version, metadata, tensors)


def _check_overlaps(path: Path, tensors: tuple[GgufTensor, ...]) -> None:
    """No two tensors may share bytes (an aliased tensor would read another's data)."""
    placed = sorted((t for t in tensors if t.nbytes), key=lambda t: (t.offset, t.name))
    if not placed:
        return
    before = placed[0]  # the tensor reaching furthest so far
    for after in placed[1:]:
        if after.offset < before.offset + before.nbytes:
            raise TensorguardError(
                f"{path}: corrupt GGUF header: tensor {after.name!r} (bytes {after.offset}-"
                f"{after.offset + after.nbytes}) overlaps tensor {before.name!r} (bytes {before.offset}-"
                f"{before.offset + before.nbytes})")
        if after.offset + after.nbytes > before.offset + before.nbytes:
            before = after


def _check_version(path: Path, version: int) -> None:
    if version in SUPPORTED_VERSIONS:
        return
    if int.from_bytes(version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
        raise TensorguardError(f"{path}: big-endian GGUF file; tensorguard reads little-endian GGUF")
    raise TensorguardError(f"{path}: unknown GGUF version {version} (tensorguard reads versions "
                           f"{' and '.join(map(str, SUPPORTED_VERSIONS))})")


def _tensor_entry(path: Path, cur: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cur.string()
    n_dims = cur.unpack(_U32)
    if not 1 <= n_dims <= _MAX_DIMS:
        raise TensorguardError(f"{path}: corrupt GGUF header: tensor {name!r} has {n_dims} dimensions")
    dims = tuple(cur.unpack(_U64) for _ in range(n_dims))
    return name, dims, cur.unpack(_U32), cur.unpack(_U64)


def _locate(path: Path, entry: tuple[str, tuple[int, ...], int, int], data_start: int,
            size: int, alignment: int) -> GgufTensor:
    name, dims, raw_type, offset = entry
    if offset % alignment:
        raise TensorguardError(f"{path}: corrupt GGUF header: tensor {name!r} starts at offset "
                               f"{offset}, not a multiple of the alignment {alignment}")
    try:
        qtype = GGMLQuantizationType(raw_type)
    except ValueError:
        raise TensorguardError(f"{path}: tensor {name!r} has unsupported tensor type {raw_type} "
                               "(unknown to the gguf package)") from None
    block, type_size = GGML_QUANT_SIZES[qtype]
    if dims[0] % block:
        raise TensorguardError(f"{path}: corrupt GGUF header: tensor {name!r} rows of {dims[0]} "
                               f"are not whole {qtype.name} blocks of {block}")
    numel = 1
    for d in dims:
        numel *= d
    nbytes = numel // block * type_size
    start = data_start + offset
    if start + nbytes > size:
        raise TensorguardError(f"{path}: truncated GGUF file: tensor {name!r} runs past the end of "
                               f"the file (needs bytes {start}-{start + nbytes}, the file has {size})")
    return GgufTensor(name, qtype, tuple(reversed(dims)), start, nbytes)
