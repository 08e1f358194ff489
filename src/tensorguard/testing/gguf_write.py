"""Write GGUF files the way llama.cpp's ``convert_hf_to_gguf.py`` does, for tests, benchmarks and
the real-model check: a Hugging Face weight dict to GGUF (``save_gguf``), and a GGUF file
re-quantized to another type (``requantize``).

The conversions applied are the converter's own formulas (see ``gguf_arch`` for which apply to
which architecture); ``gguf`` reads this module's output back through them in reverse. 1-D tensors
are written as F32, as the converter does; 2-D tensors in the asked type, quantized with
``gguf.quants`` or, for Q4_K (which ``gguf.quants`` cannot quantize), ``quantize_q4_k`` below.
Tensors are converted and quantized one at a time while writing, so memory stays near one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import (
    GGML_QUANT_SIZES,
    GGMLQuantizationType,
    GGUFReader,
    GGUFValueType,
    GGUFWriter,
    LlamaFileType,
    TensorNameMap,
)
from gguf import quants as gguf_quants

from tensorguard.loading.gguf import ARCH_IDS
from tensorguard.loading.gguf_arch import ARCHITECTURES, SUFFIXES, GgufArch
from tensorguard.loading.source import ModelSource

Q = GGMLQuantizationType
#: The ``general.file_type`` a file mostly of this type declares.
FILE_TYPES = {Q.F32: LlamaFileType.ALL_F32, Q.F16: LlamaFileType.MOSTLY_F16,
              Q.BF16: LlamaFileType.MOSTLY_BF16, Q.Q8_0: LlamaFileType.MOSTLY_Q8_0,
              Q.Q4_0: LlamaFileType.MOSTLY_Q4_0, Q.Q4_1: LlamaFileType.MOSTLY_Q4_1,
              Q.Q5_0: LlamaFileType.MOSTLY_Q5_0, Q.Q5_1: LlamaFileType.MOSTLY_Q5_1,
              Q.Q4_K: LlamaFileType.MOSTLY_Q4_K_S}


def quantize(array: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """``array`` (float32, last dimension whole blocks) in ``qtype``: numpy float16 for F16,
    float32 for F32, uint8 blocks otherwise."""
    if qtype is Q.Q4_K:
        return quantize_q4_k(array)
    return gguf_quants.quantize(array.astype(np.float32, copy=False), qtype)


def quantize_q4_k(array: np.ndarray) -> np.ndarray:
    """A simple Q4_K quantizer (min/max per 32-entry sub-block, not llama.cpp's search).

    Per 256-entry block: fp16 ``d`` and ``dmin``; per sub-block j a 6-bit scale ``sc_j`` and min
    ``m_j`` so that ``x ~ d * sc_j * q - dmin * m_j`` with 4-bit codes q. Layout (144 bytes):
    d, dmin, 12 bytes of scales (``sc/m`` of sub-blocks 0-3 in the low 6 bits of bytes 0-3/4-7,
    sub-blocks 4-7 split: low 4 bits in bytes 8-11, high 2 bits in the top bits of bytes 0-7),
    then 128 bytes of codes (sub-block 2c in the low nibbles of bytes 32c..32c+31, 2c+1 high).
    """
    x = array.astype(np.float32).reshape(-1, 8, 32)
    lo, hi = np.minimum(x.min(-1), 0), x.max(-1)
    scale, minimum = (hi - lo) / 15, -lo
    d = (scale.max(-1) / 63).astype(np.float16)
    dmin = (minimum.max(-1) / 63).astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.nan_to_num(np.round(scale / d.astype(np.float32)[:, None])).clip(0, 63).astype(np.uint8)
        m = np.nan_to_num(np.round(minimum / dmin.astype(np.float32)[:, None])).clip(0, 63).astype(np.uint8)
        step = (d.astype(np.float32)[:, None] * sc)[..., None]
        offset = (dmin.astype(np.float32)[:, None] * m)[..., None]
        q = np.nan_to_num(np.round((x + offset) / step)).clip(0, 15).astype(np.uint8)
    scales = np.concatenate([sc[:, :4] | ((sc[:, 4:] >> 4) << 6), m[:, :4] | ((m[:, 4:] >> 4) << 6),
                             (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)], axis=1)
    q = q.reshape(-1, 4, 2, 32)
    codes = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8),
                             scales, codes], axis=1)
    return blocks.reshape(*array.shape[:-1], array.shape[-1] // 256 * 144)


def _nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, type_size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * type_size


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """The converter's ``LlamaModel.permute``."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _regroup_qkv(w: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """The converter's GPT-NeoX / Falcon rearrangement of ``GROUPED`` rows (kv_heads, group + 2,
    d) to ``[all q, all k, all v]`` rows (GPT-NeoX: kv_heads = heads)."""
    d = w.shape[0] // (heads + 2 * kv_heads)
    qkv = w.reshape(kv_heads, heads // kv_heads + 2, d, *w.shape[1:])
    return torch.cat([qkv[:, :-2].reshape(-1, *w.shape[1:]), qkv[:, -2].reshape(-1, *w.shape[1:]),
                      qkv[:, -1].reshape(-1, *w.shape[1:])])


def _transposed(name: str, arch: GgufArch) -> bool:
    return name.endswith(".weight") and name.removesuffix(".weight").endswith(arch.transposed or ("\0",))


def _convert(name: str, w: torch.Tensor, arch: GgufArch, heads: int, kv_heads: int) -> torch.Tensor:
    module = name.rsplit(".", 1)[0]
    if arch.qk_permuted and module.endswith(("self_attn.q_proj", "self_attn.k_proj")):
        w = _permute(w, heads if module.endswith("q_proj") else kv_heads)
    if arch.fused_qkv and module.endswith(arch.fused_qkv):
        w = _regroup_qkv(w, heads, kv_heads)
    if _transposed(name, arch):
        w = w.T
    if arch.norm_offset and name.endswith("norm.weight"):
        w = w + arch.norm_offset
    return w


def save_gguf(weights: Mapping[str, torch.Tensor] | ModelSource, path: str | Path, *, arch: str, heads: int,
              kv_heads: int | None = None, qtype: GGMLQuantizationType = Q.F32,
              split_max_tensors: int = 0, metadata: Mapping[str, Any] | None = None,
              types: Callable[[str, tuple[int, ...]], GGMLQuantizationType] | None = None) -> Path:
    """Write Hugging Face ``weights`` as GGUF architecture ``arch`` at ``path`` (a split set
    ``path-0000i-of-0000n.gguf`` when ``split_max_tensors``); return the first file.

    2-D tensors get ``qtype`` (or ``types(name, shape)``), 1-D ones F32. ``metadata`` adds
    string/int keys (e.g. ``general.base_model.0.name``), or a value of any GGUF type as
    ``(GGUFValueType, value[, array item type])``, replacing a key written by default.
    ``weights`` may be a ``ModelSource``: each tensor is then read once, while writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = ARCHITECTURES[arch]
    kv_heads = kv_heads or heads
    if isinstance(weights, ModelSource):
        source = weights
        shapes = {n: i.shape for n, i in source.tensors.items()}
        read: Callable[[str], torch.Tensor] = lambda name: source.read(name, torch.float32)  # noqa: E731
    else:
        shapes = {n: tuple(t.shape) for n, t in weights.items()}
        read = weights.__getitem__
    blocks = 1 + max((int(n.split(".")[len(spec.stack.split("."))]) for n in shapes
                      if n.startswith(spec.stack + ".")), default=-1)
    names = TensorNameMap(ARCH_IDS[arch], blocks)
    plan: list[tuple[str, str, tuple[int, ...], GGMLQuantizationType]] = []
    for hf, shape in shapes.items():
        gguf_name = names.get_name(hf, try_suffixes=SUFFIXES)
        if gguf_name is None:
            raise ValueError(f"{hf}: no GGUF name for architecture {arch}")
        shape = shape[::-1] if _transposed(hf, spec) else shape
        chosen = Q.F32 if len(shape) == 1 else (types(hf, shape) if types else qtype)
        if shape[-1] % GGML_QUANT_SIZES[chosen][0]:
            raise ValueError(f"{hf}: rows of {shape[-1]} are not whole {chosen.name} blocks")
        plan.append((hf, gguf_name, shape, chosen))
    writer = GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    writer.add_block_count(blocks)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_file_type(FILE_TYPES.get(qtype, LlamaFileType.GUESSED))
    for key, value in (metadata or {}).items():
        if isinstance(value, tuple):  # (value type, value[, array item type]): that exact type
            writer.add_key_value(key, value[1], value[0], *value[2:])
        else:
            (writer.add_string if isinstance(value, str) else writer.add_uint32)(key, value)
    for _, gguf_name, shape, chosen in plan:
        writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32), _nbytes(shape, chosen), chosen)
    _write(writer, (quantize(_convert(hf, read(hf).float(), spec, heads, kv_heads).numpy(), q)
                    for hf, _, _, q in plan))
    return writer.format_shard_names(path)[0]


def _write(writer: GGUFWriter, arrays: Iterable[np.ndarray]) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for array in arrays:
        writer.write_tensor_data(np.ascontiguousarray(array))
    writer.close()


def requantize(source: str | Path, target: str | Path, qtype: GGMLQuantizationType) -> Path:
    """Copy the GGUF file ``source`` to ``target`` with every 2-D tensor dequantized and
    re-quantized to ``qtype`` (metadata copied, ``general.file_type`` updated)."""
    reader = GGUFReader(source)
    arch = str(reader.get_field("general.architecture").contents())  # type: ignore[union-attr]
    writer = GGUFWriter(target, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
    writer.add_file_type(FILE_TYPES.get(qtype, LlamaFileType.GUESSED))
    chosen = [qtype if len(t.shape) == 2 else Q.F32 for t in reader.tensors]
    for t, q in zip(reader.tensors, chosen, strict=True):
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        writer.add_tensor_info(t.name, shape, np.dtype(np.float32), _nbytes(shape, q), q)
    _write(writer, (quantize(gguf_quants.dequantize(t.data, t.tensor_type), q)
                    for t, q in zip(reader.tensors, chosen, strict=True)))
    return Path(target)
