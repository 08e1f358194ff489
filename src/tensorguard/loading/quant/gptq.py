"""GPTQ checkpoints (AutoGPTQ, GPTQModel, transformers): 2, 3, 4 and 8 bits, v1 and v2 zero
points, act-order (``g_idx``).

For a linear layer with K inputs, N outputs, b bits and G groups:

- ``qweight`` int32 (K*b/32, N): codes packed along the input dimension, least significant first
  (3-bit codes form one bit stream over each 3 words);
- ``qzeros`` int32 (G, N*b/32): zero points packed the same way along the output dimension;
  ``checkpoint_format`` ``gptq`` (v1, the default) stores zero - 1, ``gptq_v2`` the zero itself;
- ``scales`` float (G, N); ``g_idx`` int32 (K): the group of each input (act-order shuffles it;
  without it, input k is in group k // (K / G)).

``W[n, k] = scales[g_idx[k], n] * (q[k, n] - zero[g_idx[k], n])``.

Row reads: rows of the logical (N, K) weight are columns of ``qweight``, so a block of rows reads
a column slice of ``qweight``, ``scales`` and ``qzeros`` (strided: the file pages of the whole
packed tensor are touched) and decodes only those outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorguard.errors import TensorguardError
from tensorguard.loading.formats import WeightFormat
from tensorguard.loading.header import FLOAT_DTYPES, INTEGER_DTYPES, TensorInfo
from tensorguard.loading.quant.base import (
    PackedFormat,
    PackedTensor,
    StoredTensors,
    config_file,
    expect,
    group_size,
    inconsistent,
    packed_span,
    quant_config,
    quantization,
    require,
    to_numpy,
    unpack,
)
from tensorguard.validation import shown

if TYPE_CHECKING:
    import torch

BITS = (2, 3, 4, 8)
CHECKPOINT_FORMATS = {"gptq": True, "gptq_v2": False}  # -> zeros stored minus one


class GptqTensor(PackedTensor):
    def __init__(self, info: TensorInfo, prefix: str, parts: tuple[str, ...], bits: int,
                 zeros_minus_one: bool, group: int, has_g_idx: bool, where: Path) -> None:
        super().__init__(info, parts)
        self.prefix, self.bits, self.zeros_minus_one = prefix, bits, zeros_minus_one
        self.group, self.has_g_idx, self.where = group, has_g_idx, where

    def read(self, stored: StoredTensors, rows: slice) -> torch.Tensor:
        import torch

        p, (_, k) = self.prefix, self.info.shape
        codes = unpack(to_numpy(stored.get(p + ".qweight", cols=rows)), self.bits, axis=0)[:k]
        span, first = packed_span(rows.start, rows.stop, self.bits)
        zeros = unpack(to_numpy(stored.get(p + ".qzeros", cols=span)), self.bits, axis=1)
        zeros = zeros[:, rows.start - first:rows.stop - first] + int(self.zeros_minus_one)
        scales = stored.get(p + ".scales", cols=rows).float()
        groups = self._groups(stored, scales.shape[0])
        w = scales[groups] * (torch.from_numpy(codes).float() - torch.from_numpy(zeros[groups]).float())
        return w.T.contiguous()

    def _groups(self, stored: StoredTensors, n_groups: int) -> np.ndarray:
        k = self.info.shape[1]
        if not self.has_g_idx:
            return np.arange(k) // self.group
        groups = to_numpy(stored.get(self.prefix + ".g_idx")).astype(np.int64)
        if groups.min(initial=0) < 0 or groups.max(initial=0) >= n_groups:
            raise TensorguardError(f"{self.where}: packed weight {self.info.name!r}: g_idx names "
                                   f"groups outside 0..{n_groups - 1}")
        return groups


class Gptq(PackedFormat):
    format = WeightFormat.GPTQ
    quant_methods = ("gptq",)
    markers = (".qweight",)

    def recognises(self, infos: Mapping[str, TensorInfo], qconfig: Mapping[str, Any]) -> bool:
        if not super().recognises(infos, qconfig):
            return False
        if "quant_method" in qconfig:
            return True
        # no config: GPTQ's qweight has as many columns as its scales, AWQ's has them packed
        return any(columns_match(infos, n) for n in infos if n.endswith(".qweight"))

    def plan(self, infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
             stored: StoredTensors) -> dict[str, PackedTensor]:
        qconfig = quant_config(config)
        fmt = qconfig.get("checkpoint_format", "gptq")
        if not isinstance(fmt, str) or fmt not in CHECKPOINT_FORMATS:
            raise TensorguardError(f"{config_file(where)}: GPTQ checkpoint_format {shown(fmt)} is not read "
                                   f"(only {', '.join(CHECKPOINT_FORMATS)})")
        return {t.info.name: t for t in (
            self._weight(infos, n.removesuffix(".qweight"), qconfig, CHECKPOINT_FORMATS[fmt], where)
            for n in infos if n.endswith(".qweight"))}

    def _weight(self, infos: Mapping[str, TensorInfo], prefix: str, qconfig: Mapping[str, Any],
                zeros_minus_one: bool, where: Path) -> GptqTensor:
        weight = prefix + ".weight"
        qweight = infos[prefix + ".qweight"]
        scales = require(infos, prefix + ".scales", weight, "scales", where)
        qzeros = require(infos, prefix + ".qzeros", weight, "zero points", where)
        g_idx = infos.get(prefix + ".g_idx")
        for part, dtypes in ((qweight, {"I32"}), (qzeros, {"I32"}), (scales, FLOAT_DTYPES)):
            expect(part, weight, where, dtypes=dtypes, ndim={2})
        if g_idx is not None:
            expect(g_idx, weight, where, dtypes=INTEGER_DTYPES, ndim={1})
        n_groups, n = scales.shape
        bits = qconfig.get("bits") or _infer_bits(qweight, qzeros, g_idx, n)
        if isinstance(bits, bool) or bits not in BITS:
            raise TensorguardError(f"{config_file(where)}: packed weight {weight!r}: GPTQ with "
                                   f"{shown(bits)} bits is not supported ({', '.join(map(str, BITS))})")
        bits = int(bits)
        k = qweight.shape[0] * 32 // bits
        if qweight.shape[1] != n or qzeros.shape != (n_groups, -(-n * bits // 32)):
            raise inconsistent(where, weight, f"qweight {list(qweight.shape)}, qzeros "
                               f"{list(qzeros.shape)} and scales {list(scales.shape)} do not fit "
                               f"{bits}-bit codes")
        if g_idx is not None and g_idx.shape != (k,):
            raise inconsistent(where, weight, f"g_idx has {list(g_idx.shape)} entries for {k} inputs")
        group = group_size(qconfig.get("group_size"), k, n_groups, where)
        if -(-k // group) != n_groups:
            raise inconsistent(where, weight, f"{n_groups} groups of scales for {k} inputs, but "
                               f"group_size is {group}")
        parts = [qweight, scales, qzeros] + ([g_idx] if g_idx is not None else [])
        info = TensorInfo(weight, (n, k), f"gptq-int{bits}", qweight.shard,
                          quantization(f"gptq-int{bits}", bits, parts, n * k, (1, group)))
        return GptqTensor(info, prefix, tuple(p.name for p in parts), bits, zeros_minus_one, group,
                          g_idx is not None, where)


def columns_match(infos: Mapping[str, TensorInfo], qweight: str) -> bool:
    scales = infos.get(qweight.removesuffix(".qweight") + ".scales")
    return scales is not None and scales.shape[-1:] == infos[qweight].shape[-1:]


def _infer_bits(qweight: TensorInfo, qzeros: TensorInfo, g_idx: TensorInfo | None, n: int) -> float:
    """Code width from the shapes: qweight rows against inputs, or qzeros columns against outputs."""
    if g_idx is not None and g_idx.ndim == 1 and g_idx.shape[0]:
        return 32 * qweight.shape[0] / g_idx.shape[0]
    return 32 * qzeros.shape[1] / max(1, n)


FORMAT = Gptq()
