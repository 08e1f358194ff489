"""AWQ checkpoints (AutoAWQ, ``version: gemm``): 4-bit codes with zero points per group.

For a linear layer with K inputs, N outputs and groups of g inputs:

- ``qweight`` int32 (K, N/8) and ``qzeros`` int32 (K/g, N/8): eight 4-bit codes per word along the
  output dimension, in the GEMM kernel's interleaved order: nibble i (bits 4i..4i+3) of word w
  holds output ``8w + [0, 2, 4, 6, 1, 3, 5, 7][i]``;
- ``scales`` float (K/g, N).

``W[n, k] = (q[k, n] - zero[k // g, n]) * scales[k // g, n]``.

Row reads: rows of the logical (N, K) weight are columns of ``qweight``; a block of rows reads the
words holding those outputs from every input row (strided) and decodes only them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorguard.errors import TensorguardError
from tensorguard.loading.formats import WeightFormat
from tensorguard.loading.header import FLOAT_DTYPES, TensorInfo
from tensorguard.loading.quant.base import (
    PackedFormat,
    PackedTensor,
    StoredTensors,
    config_file,
    expect,
    group_size,
    inconsistent,
    quant_config,
    quantization,
    require,
    to_numpy,
    unpack,
)
from tensorguard.loading.quant.gptq import columns_match as _columns_match
from tensorguard.validation import shown

if TYPE_CHECKING:
    import torch

BITS = 4
PACK = 32 // BITS
#: Output (within its word) of each nibble, and the nibble of each output.
ORDER = np.array([0, 2, 4, 6, 1, 3, 5, 7])
NIBBLE_OF_OUTPUT = np.argsort(ORDER)
VERSIONS = ("gemm",)


def _unpack_outputs(words: np.ndarray) -> np.ndarray:
    """(rows, words) int32 -> (rows, 8 * words) codes in output order."""
    codes = unpack(words, BITS, axis=1).reshape(words.shape[0], words.shape[1], PACK)
    return codes[:, :, NIBBLE_OF_OUTPUT].reshape(words.shape[0], -1)


class AwqTensor(PackedTensor):
    def __init__(self, info: TensorInfo, prefix: str, parts: tuple[str, ...], group: int) -> None:
        super().__init__(info, parts)
        self.prefix, self.group = prefix, group

    def read(self, stored: StoredTensors, rows: slice) -> torch.Tensor:
        import torch

        first = rows.start // PACK
        words = slice(first, -(-rows.stop // PACK))
        keep = slice(rows.start - first * PACK, rows.stop - first * PACK)
        codes = _unpack_outputs(to_numpy(stored.get(self.prefix + ".qweight", cols=words)))[:, keep]
        zeros = _unpack_outputs(to_numpy(stored.get(self.prefix + ".qzeros", cols=words)))[:, keep]
        scales = stored.get(self.prefix + ".scales", cols=rows).float()
        groups = np.arange(codes.shape[0]) // self.group
        w = (torch.from_numpy(codes).float() - torch.from_numpy(zeros[groups]).float()) * scales[groups]
        return w.T.contiguous()


class Awq(PackedFormat):
    format = WeightFormat.AWQ
    quant_methods = ("awq",)
    markers = (".qweight",)

    def recognises(self, infos: Mapping[str, TensorInfo], qconfig: Mapping[str, Any]) -> bool:
        # without a config, AWQ is a qweight whose columns are packed (GPTQ's are not)
        return super().recognises(infos, qconfig) and ("quant_method" in qconfig or not any(
            _columns_match(infos, n) for n in infos if n.endswith(".qweight")))

    def plan(self, infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
             stored: StoredTensors) -> dict[str, PackedTensor]:
        qconfig = quant_config(config)
        version = qconfig.get("version", "gemm")
        if not isinstance(version, str) or version.lower() not in VERSIONS:
            raise TensorguardError(f"{config_file(where)}: AWQ version {shown(version)} is not read "
                                   "(only GEMM packing)")
        bits = qconfig.get("bits", qconfig.get("w_bit", BITS))
        if bits != BITS or isinstance(bits, bool):
            raise TensorguardError(f"{config_file(where)}: AWQ with {shown(bits)} bits is not read "
                                   "(4-bit GEMM only)")
        configured = qconfig.get("group_size", qconfig.get("q_group_size"))
        return {t.info.name: t for t in (
            self._weight(infos, n.removesuffix(".qweight"), configured, where)
            for n in infos if n.endswith(".qweight"))}

    def _weight(self, infos: Mapping[str, TensorInfo], prefix: str, configured: Any,
                where: Path) -> AwqTensor:
        weight = prefix + ".weight"
        qweight = infos[prefix + ".qweight"]
        scales = require(infos, prefix + ".scales", weight, "scales", where)
        qzeros = require(infos, prefix + ".qzeros", weight, "zero points", where)
        for part, dtypes in ((qweight, {"I32"}), (qzeros, {"I32"}), (scales, FLOAT_DTYPES)):
            expect(part, weight, where, dtypes=dtypes, ndim={2})
        k, (n_groups, n) = qweight.shape[0], scales.shape
        if qweight.shape[1] * PACK != n or qzeros.shape != (n_groups, qweight.shape[1]):
            raise inconsistent(where, weight, f"qweight {list(qweight.shape)}, qzeros "
                               f"{list(qzeros.shape)} and scales {list(scales.shape)} do not fit "
                               "4-bit codes")
        group = group_size(configured, k, n_groups, where)
        if k % group or k // group != n_groups:
            raise inconsistent(where, weight, f"{n_groups} groups of scales for {k} inputs, "
                               f"but group_size is {group}")
        parts = [qweight, scales, qzeros]
        info = TensorInfo(weight, (n, k), "awq-int4", qweight.shard,
                          quantization("awq-int4", BITS, parts, n * k, (1, group)))
        return AwqTensor(info, prefix, tuple(p.name for p in parts), group)


FORMAT = Awq()
