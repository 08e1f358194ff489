"""GGUF models (one file or a split set) read back as the Hugging Face model they were made from.

Tensors are listed under Hugging Face names for the architectures in ``gguf_arch`` (other
architectures keep their GGUF names), with llama.cpp's conversions undone: q/k rows un-permuted,
fused qkv rows regrouped, GPT-2's transposition reverted, Gemma's +1 on norms subtracted, shapes in
row-major order. Converter-generated tensors (RoPE factors) are not listed.

Reads are streamed: the bytes of the asked rows only (GGUF rows are whole quantization blocks) are
read from the file and dequantized to float32 with ``gguf.quants``; float tensors (F32, F16, BF16)
are returned as stored. Un-permuted rows are gathered from the few contiguous runs of stored rows
they come from. Exceptions, each read whole: 1-D tensors, and GPT-2's transposed matrices (a
logical row is a stored column), of which the last one read is kept until another tensor is read.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gguf import MODEL_ARCH_NAMES, GGMLQuantizationType, LlamaFileType
from gguf import quants as gguf_quants
from gguf.constants import GGML_QUANT_SIZES
from gguf.tensor_mapping import TensorNameMap

from tensorguard.errors import TensorguardError
from tensorguard.loading import bytesource
from tensorguard.loading.claims import BaseModelClaim, GgufClaims
from tensorguard.loading.formats import Quantization, WeightFormat
from tensorguard.loading.gguf_arch import ARCHITECTURES, SUFFIXES, GgufArch
from tensorguard.loading.gguf_file import (
    ArrayLength,
    GgufHeader,
    GgufTensor,
    metadata_value,
    read_gguf_header,
)
from tensorguard.loading.header import TensorInfo
from tensorguard.loading.layouts import Resolved
from tensorguard.validation import shown

if TYPE_CHECKING:
    import torch

#: GGML float types, read as stored: (safetensors-style dtype name, torch dtype name).
FLOAT_TYPES: dict[GGMLQuantizationType, tuple[str, str]] = {
    GGMLQuantizationType.F32: ("F32", "float32"),
    GGMLQuantizationType.F16: ("F16", "float16"),
    GGMLQuantizationType.BF16: ("BF16", "bfloat16"),
}
#: ``general.architecture`` -> the ``gguf`` package's architecture id (for its name map).
ARCH_IDS = {name: arch for arch, name in MODEL_ARCH_NAMES.items()}
_BLOCK = re.compile(r"^blk\.(\d+)\.")


@functools.cache
def dequantizable(qtype: GGMLQuantizationType) -> bool:
    """Whether ``gguf.quants`` can dequantize this tensor type (asked of the package itself)."""
    if qtype in FLOAT_TYPES:
        return True
    try:
        gguf_quants.dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


@dataclass(frozen=True)
class _Plan:
    """How to read one logical tensor from its stored GGUF tensor."""

    tensor: GgufTensor
    path: Path
    rows: np.ndarray | None  # the stored row of each logical row; None: the same row
    transpose: bool
    offset: float  # subtracted after reading (Gemma norms)


class GgufStore:
    """The tensors of one GGUF file or split set."""

    format = WeightFormat.GGUF

    def __init__(self, resolved: Resolved) -> None:
        headers = [read_gguf_header(p) for p in resolved.shards]
        _check_split(headers)
        metadata = headers[0].metadata
        where = resolved.shards[0]
        if metadata_value(metadata, "general.type", str, where) == "adapter":
            raise TensorguardError(f"{where}: a GGUF LoRA adapter; pass the model it adapts, merged")
        arch_name = metadata_value(metadata, "general.architecture", str, where) or ""
        stored = _directory(headers)
        present = set(stored)
        arch = ARCHITECTURES.get(arch_name)
        names = {} if arch is None else _hf_names(
            arch_name, arch, _block_count(metadata, arch_name, present, where), present)
        self._plans: dict[str, _Plan] = {}
        infos: dict[str, TensorInfo] = {}
        for gguf_name, (tensor, path) in stored.items():
            if arch is not None and gguf_name in arch.generated:
                continue
            hf, module = names.get(gguf_name, (gguf_name, ""))
            plan = _plan(tensor, path, hf, module, arch, metadata, arch_name)
            self._plans[hf] = plan
            infos[hf] = _info(hf, plan)
        self.tensors: dict[str, TensorInfo] = dict(sorted(infos.items()))
        self.claims = _claims(metadata, arch_name, present, arch is not None, where)
        self._files: dict[Path, io.BufferedReader] = {}
        self._whole: tuple[str, torch.Tensor] | None = None

    def read(self, name: str, rows: slice | None, dtype: torch.dtype | None) -> torch.Tensor:
        plan = self._plans[name]
        if plan.transpose or len(plan.tensor.shape) == 1:  # a copy: the kept tensor stays intact
            whole = self._read_whole(name, plan)
            out = (whole if rows is None else whole[rows]).clone()
        else:
            rows = rows or slice(0, plan.tensor.shape[0])
            out = (self._decode(plan, rows.start, rows.stop) if plan.rows is None
                   else self._gather(plan, plan.rows[rows]))
            out = out.float() - plan.offset if plan.offset else out
        return out if dtype is None else out.to(dtype)

    def _read_whole(self, name: str, plan: _Plan) -> torch.Tensor:
        import torch

        if self._whole is None or self._whole[0] != name:
            whole = self._decode(plan, 0, plan.tensor.shape[0])
            if plan.rows is not None:
                whole = whole[torch.from_numpy(plan.rows)]
            whole = whole.T.contiguous() if plan.transpose else whole
            self._whole = (name, whole.float() - plan.offset if plan.offset else whole)
        return self._whole[1]

    def _gather(self, plan: _Plan, wanted: np.ndarray) -> torch.Tensor:
        """Stored rows ``wanted`` in that order, read as the contiguous runs they fall into."""
        import torch

        order = np.unique(wanted)
        runs = np.split(order, np.flatnonzero(np.diff(order) != 1) + 1)
        parts = [self._decode(plan, int(run[0]), int(run[-1]) + 1) for run in runs]
        block = parts[0] if len(parts) == 1 else torch.cat(parts)
        return block[torch.from_numpy(np.searchsorted(order, wanted))]

    def _decode(self, plan: _Plan, first: int, last: int) -> torch.Tensor:
        """Stored rows ``first:last`` (all of a 1-D tensor), dequantized unless float."""
        import torch

        t = plan.tensor
        whole = len(t.shape) == 1
        start, size = (t.offset, t.nbytes) if whole else (t.offset + first * t.row_bytes,
                                                          (last - first) * t.row_bytes)
        shape = t.shape if whole else (last - first, *t.shape[1:])
        dtype = getattr(torch, FLOAT_TYPES[t.qtype][1]) if t.qtype in FLOAT_TYPES else torch.float32
        if size == 0:  # no entries: nothing to read (torch.frombuffer refuses an empty buffer)
            return torch.zeros(shape, dtype=dtype)
        buf = bytearray(size)
        bytesource.need(plan.path, start, size)
        fh = self._file(plan.path)
        fh.seek(start)
        if fh.readinto(buf) != size:
            raise TensorguardError(f"{plan.path}: truncated GGUF file: tensor {t.name!r} ends early")
        if t.qtype in FLOAT_TYPES:
            return torch.frombuffer(buf, dtype=dtype).reshape(shape)
        raw = np.frombuffer(buf, dtype=np.uint8).reshape(*shape[:-1], -1)
        with np.errstate(all="ignore"):  # corrupt scales give inf or NaN: refused where read, by name
            return torch.from_numpy(gguf_quants.dequantize(raw, t.qtype).reshape(shape))

    def _file(self, path: Path) -> io.BufferedReader:
        if path not in self._files:
            self._files[path] = path.open("rb")
        return self._files[path]

    def release(self) -> None:
        """Close the files and forget the kept whole tensor."""
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        self._whole = None


def _check_split(headers: list[GgufHeader]) -> None:
    count = headers[0].metadata.get("split.count")
    if count is not None and count != len(headers):
        raise TensorguardError(f"{headers[0].path}: split GGUF set of {shown(count)} parts, but "
                               f"{len(headers)} part(s) found")
    for i, header in enumerate(headers):
        number = header.metadata.get("split.no", i)
        if number != i:
            said = f"part {number + 1}" if type(number) is int else f"split.no {shown(number)}"
            raise TensorguardError(f"{header.path}: is {said} of its split GGUF set, expected part "
                                   f"{i + 1}")


def _directory(headers: list[GgufHeader]) -> dict[str, tuple[GgufTensor, Path]]:
    """Every tensor of every part; each must be of a type gguf.quants can dequantize."""
    out: dict[str, tuple[GgufTensor, Path]] = {}
    for header in headers:
        for t in header.tensors:
            if t.name in out:
                raise TensorguardError(f"{header.path}: tensor {t.name!r} also appears in "
                                       f"{out[t.name][1].name}")
            if not dequantizable(t.qtype):
                raise TensorguardError(f"{header.path}: tensor {t.name!r} has unsupported tensor "
                                       f"type {t.qtype.name} (gguf.quants cannot dequantize it)")
            out[t.name] = (t, header.path)
    return out


def _block_count(metadata: Mapping[str, Any], arch_name: str, present: set[str], where: Path) -> int:
    """Blocks to map names for: the metadata's count, else one past the highest ``blk.N``. Every
    block has tensors, so a count beyond the number of tensors is refused (mapping names for it
    would take as long as the count)."""
    count: int | None = metadata_value(metadata, f"{arch_name}.block_count", int, where)
    if count is None:
        count = max((int(m.group(1)) for n in present if (m := _BLOCK.match(n))), default=-1) + 1
    if not 0 <= count <= len(present):
        raise TensorguardError(f"{where}: corrupt GGUF header: {count} blocks (from "
                               f"{arch_name}.block_count or the tensor names), but only "
                               f"{len(present)} tensors")
    return count


def _hf_names(arch_name: str, arch: GgufArch, n_blocks: int,
              present: set[str]) -> dict[str, tuple[str, str]]:
    """GGUF name -> (Hugging Face name, module), asking gguf's TensorNameMap for the GGUF name of
    each Hugging Face module of the architecture."""
    if arch_name not in ARCH_IDS:
        return {}
    names = TensorNameMap(ARCH_IDS[arch_name], n_blocks)
    first = next((modules for marker, modules in arch.variants if marker in present), ())
    block = (*first, *arch.block)
    out: dict[str, tuple[str, str]] = {}
    places = [("", arch.top)] + [(f"{arch.stack}.{b}.", block) for b in range(n_blocks)]
    for prefix, modules in places:
        for module in modules:
            for suffix in SUFFIXES:
                hf = prefix + module + suffix
                gguf_name = names.get_name(hf, try_suffixes=SUFFIXES)
                if gguf_name is not None:
                    out.setdefault(gguf_name, (hf, module))
    return out


def _plan(tensor: GgufTensor, path: Path, hf: str, module: str, arch: GgufArch | None,
          metadata: Mapping[str, Any], arch_name: str) -> _Plan:
    if arch is None:
        return _Plan(tensor, path, None, False, 0.0)
    rows = None
    if arch.qk_permuted and module in ("self_attn.q_proj", "self_attn.k_proj"):
        key = "head_count" if module == "self_attn.q_proj" else "head_count_kv"
        rows = _qk_rows(tensor, _heads(metadata, arch_name, key, path), path)
    elif module == arch.fused_qkv:
        heads = _heads(metadata, arch_name, "head_count", path)
        kv_heads = _heads(metadata, arch_name, "head_count_kv", path)
        rows = _fused_rows(tensor, heads, kv_heads, path)
    transpose = module in arch.transposed and len(tensor.shape) == 2
    offset = arch.norm_offset if hf.endswith("norm.weight") else 0.0
    return _Plan(tensor, path, rows, transpose, offset)


def _heads(metadata: Mapping[str, Any], arch_name: str, key: str, path: Path) -> int:
    value = metadata_value(metadata, f"{arch_name}.attention.{key}", (int, tuple), path, items=int)
    if value is None and key == "head_count_kv":
        value = metadata_value(metadata, f"{arch_name}.attention.head_count", (int, tuple), path, items=int)
    if isinstance(value, tuple) and value and len(set(value)) == 1:
        value = value[0]
    if not isinstance(value, int) or value <= 0:
        raise TensorguardError(f"{path}: metadata {arch_name}.attention.{key} is {value!r}; "
                               "needed to undo llama.cpp's attention row order")
    return value


def _qk_rows(tensor: GgufTensor, heads: int, path: Path) -> np.ndarray:
    """llama.cpp stores head h's rows ``(2, d/2)`` as ``(d/2, 2)``: Hugging Face row
    ``h*d + t*d/2 + i`` is stored row ``h*d + 2*i + t``."""
    n = tensor.shape[0]
    if n % heads or (n // heads) % 2:
        raise TensorguardError(f"{path}: cannot undo the q/k row permutation of {tensor.name!r}: "
                               f"{n} rows for {heads} heads")
    d = n // heads
    head, within = np.divmod(np.arange(n), d)
    half, i = np.divmod(within, d // 2)
    rows: np.ndarray = head * d + 2 * i + half
    return rows


def _fused_rows(tensor: GgufTensor, heads: int, kv_heads: int, path: Path) -> np.ndarray:
    """The stored row (``[all q, all k, all v]``) of each Hugging Face row of a fused qkv matrix
    in the registry's ``GROUPED`` order: rows (kv_heads, group + 2, d) with group = heads / kv_heads
    (GPT-NeoX: kv_heads = heads) -> stored q (heads, d), k (kv_heads, d), v (kv_heads, d)."""
    n = tensor.shape[0]
    group = heads // kv_heads if heads % kv_heads == 0 else 0
    per_head = n // (heads + 2 * kv_heads)
    if per_head <= 0 or not group or n != per_head * (heads + 2 * kv_heads):
        raise TensorguardError(f"{path}: cannot undo the fused qkv row order of {tensor.name!r}: "
                               f"{n} rows for {heads} heads and {kv_heads} KV heads")
    kv, rest = np.divmod(np.arange(n), (group + 2) * per_head)
    slot, d = np.divmod(rest, per_head)
    q = (kv * group + slot) * per_head + d
    k = (heads + kv) * per_head + d
    v = (heads + kv_heads + kv) * per_head + d
    return np.where(slot < group, q, np.where(slot == group, k, v))


def _info(name: str, plan: _Plan) -> TensorInfo:
    t = plan.tensor
    shape = tuple(reversed(t.shape)) if plan.transpose else t.shape
    if t.qtype in FLOAT_TYPES:
        return TensorInfo(name, shape, "F32" if plan.offset else FLOAT_TYPES[t.qtype][0], plan.path)
    block, type_size = GGML_QUANT_SIZES[t.qtype]
    bits = int(re.search(r"\d", t.qtype.name).group())  # type: ignore[union-attr]
    quant = Quantization(t.qtype.name, bits, type_size * 8 / block, (1, block))
    return TensorInfo(name, shape, t.qtype.name, plan.path, quant)


def _claims(metadata: Mapping[str, Any], arch_name: str, present: set[str], mapped: bool,
            where: Path) -> GgufClaims:
    """What the metadata says; every key read is checked for its type (a per-layer array of
    numbers, as some architectures store head counts, is no single number to claim)."""
    def text(key: str) -> str | None:
        value: str | None = metadata_value(metadata, key, str, where)
        return value

    def number(key: str) -> int | None:
        value = metadata_value(metadata, f"{arch_name}.{key}", (int, tuple), where, items=int)
        return value if isinstance(value, int) else None

    file_type = metadata_value(metadata, "general.file_type", int, where)
    if file_type is not None:
        known = file_type in {t.value for t in LlamaFileType}
        file_type = LlamaFileType(file_type).name if known else str(file_type)
    tokens = metadata_value(metadata, "tokenizer.ggml.tokens", (tuple, ArrayLength), where, items=str)
    token_count = (tokens.count if isinstance(tokens, ArrayLength)
                   else len(tokens) if isinstance(tokens, tuple) else None)
    count = metadata_value(metadata, "general.base_model.count", int, where) or 0
    count = min(count, len(metadata))  # a claim: no more than the keys
    base_models = tuple(
        BaseModelClaim(*(text(f"general.base_model.{i}.{k}")
                         for k in ("name", "organization", "version", "repo_url")))
        for i in range(count))
    tied = (None if arch_name not in ARCH_IDS
            else "token_embd.weight" in present and "output.weight" not in present)
    return GgufClaims(
        architecture=arch_name, name=text("general.name"), organization=text("general.organization"),
        basename=text("general.basename"), finetune=text("general.finetune"),
        size_label=text("general.size_label"), file_type=file_type if isinstance(file_type, str) else None,
        block_count=number("block_count"), context_length=number("context_length"),
        embedding_length=number("embedding_length"), feed_forward_length=number("feed_forward_length"),
        head_count=number("attention.head_count"), head_count_kv=number("attention.head_count_kv"),
        vocab_size=number("vocab_size") or token_count, base_models=base_models,
        tied_embeddings=tied, hf_names=mapped)
