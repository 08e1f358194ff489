"""compressed-tensors checkpoints (llm-compressor, vLLM): ``quant_method: compressed-tensors``.

- ``pack-quantized``: ``P.weight_packed`` int32 (N, ceil(K*b/32)), codes packed along each row
  least significant first; ``P.weight_scale`` (N, G) (G = 1: per channel); ``P.weight_shape``
  (N, K); optional ``P.weight_zero_point`` int32 (ceil(N*b/32), G), packed along the output
  dimension. Codes and zero points are stored offset by ``2**(b-1)``, so
  ``W[n, k] = (q[n, k] - z[n, k // g]) * scale[n, k // g]`` with ``z = 2**(b-1)`` when there is no
  zero-point tensor (symmetric).
- ``float-quantized``, ``int-quantized``, ``naive-quantized``: one float8 or int8 code per entry,
  ``P.weight_scale`` per tensor, channel, group or block (``block_structure``) and optional
  ``P.weight_zero_point`` (see ``scaled``).

Activation-quantization tensors (``input_scale``, ``input_zero_point``) are consumed and not listed.
A checkpoint whose config groups quantize weights differently is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from tensorguard.loading.quant.scaled import scaled_tensor
from tensorguard.validation import shown

if TYPE_CHECKING:
    import torch

PACKED = "pack-quantized"
SCALED = ("float-quantized", "int-quantized", "naive-quantized")
ACTIVATION = (".input_scale", ".input_zero_point")


class PackedIntTensor(PackedTensor):
    def __init__(self, info: TensorInfo, prefix: str, parts: tuple[str, ...], bits: int,
                 group: int, has_zero: bool) -> None:
        super().__init__(info, parts)
        self.prefix, self.bits, self.group, self.has_zero = prefix, bits, group, has_zero

    def read(self, stored: StoredTensors, rows: slice) -> torch.Tensor:
        import torch

        k = self.info.shape[1]
        packed = to_numpy(stored.get(self.prefix + ".weight_packed", rows=rows))
        codes = torch.from_numpy(unpack(packed, self.bits, axis=1)[:, :k]).float()
        scale = stored.get(self.prefix + ".weight_scale", rows=rows).float().reshape(codes.shape[0], -1)
        groups = torch.arange(k) // self.group
        if self.has_zero:
            span, first = packed_span(rows.start, rows.stop, self.bits)
            zeros = unpack(to_numpy(stored.get(self.prefix + ".weight_zero_point", rows=span)),
                           self.bits, axis=0)[rows.start - first:rows.stop - first]
            codes = codes - torch.from_numpy(zeros).float()[:, groups]
        else:
            codes = codes - 2 ** (self.bits - 1)
        return codes * scale[:, groups]


class CompressedTensors(PackedFormat):
    format = WeightFormat.COMPRESSED_TENSORS
    quant_methods = ("compressed-tensors",)
    markers = (".weight_packed", ".weight_scale")

    def plan(self, infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
             stored: StoredTensors) -> dict[str, PackedTensor]:
        qconfig = quant_config(config)
        weights, fmt = _weights_config(qconfig, where)
        out: dict[str, PackedTensor] = {}
        if fmt == PACKED:
            for name in infos:
                if name.endswith(".weight_packed"):
                    tensor = self._packed(infos, name.removesuffix(".weight_packed"), weights,
                                          where, stored)
                    out[tensor.info.name] = tensor
            return out
        if fmt not in SCALED:
            raise TensorguardError(f"{config_file(where)}: compressed-tensors format {shown(fmt)} is not "
                                   f"read ({PACKED}, {', '.join(SCALED)} are)")
        block = weights.get("block_structure") if weights.get("strategy") == "block" else None
        for name in infos:
            if name.endswith(".weight_scale") and name.removesuffix("_scale") in infos:
                prefix = name.removesuffix(".weight_scale")
                out[prefix + ".weight"] = scaled_tensor(
                    infos, prefix + ".weight", name, prefix + ".weight_zero_point", block=block,
                    factor=1.0, where=where, extra=[prefix + a for a in ACTIVATION])
        return out

    def _packed(self, infos: Mapping[str, TensorInfo], prefix: str, weights: Mapping[str, Any],
                where: Path, stored: StoredTensors) -> PackedIntTensor:
        weight = prefix + ".weight"
        packed = infos[prefix + ".weight_packed"]
        scale = require(infos, prefix + ".weight_scale", weight, "scales", where)
        shape_info = require(infos, prefix + ".weight_shape", weight, "weight_shape", where)
        zero = infos.get(prefix + ".weight_zero_point")
        n, k = _shape(stored, expect(shape_info, weight, where, dtypes=INTEGER_DTYPES), weight, where)
        bits = weights.get("num_bits", 0)
        if isinstance(bits, bool) or bits not in (2, 4, 8) or packed.ndim != 2 or packed.dtype != "I32":
            raise TensorguardError(f"{where}: packed weight {weight!r}: compressed-tensors "
                                   f"{shown(bits)}-bit codes in a {packed.dtype} tensor are not read "
                                   "(2, 4 or 8 bits in int32)")
        bits = int(bits)
        expect(scale, weight, where, dtypes=FLOAT_DTYPES)
        if zero is not None:
            expect(zero, weight, where, dtypes={"I32"}, ndim={2})
        n_groups = scale.numel // max(1, n)
        group = group_size(weights.get("group_size"), k, n_groups, where)
        if (packed.shape != (n, -(-k * bits // 32)) or scale.numel != n * n_groups
                or -(-k // group) != n_groups):
            raise inconsistent(where, weight, f"weight_packed {list(packed.shape)} and scales "
                               f"{list(scale.shape)} do not fit a {n}x{k} weight of {bits}-bit "
                               f"codes in groups of {group}")
        if zero is not None and zero.shape != (-(-n * bits // 32), n_groups):
            raise inconsistent(where, weight, f"zero points {list(zero.shape)} do not fit {n} "
                               f"outputs and {n_groups} groups")
        parts = [packed, scale, shape_info] + ([zero] if zero is not None else [])
        parts += [infos[prefix + a] for a in ACTIVATION if prefix + a in infos]
        scheme = f"int{bits}"
        info = TensorInfo(weight, (n, k), scheme, packed.shard,
                          quantization(scheme, bits, parts, n * k, (1, group)))
        return PackedIntTensor(info, prefix, tuple(p.name for p in parts), bits, group,
                               zero is not None)


def _weights_config(qconfig: Mapping[str, Any], where: Path) -> tuple[dict[str, Any], str]:
    """The one weight-quantization config all config groups share, and the storage format."""
    found = qconfig.get("config_groups")
    groups = [g for g in found.values() if isinstance(g, dict)] if isinstance(found, dict) else []
    weights: list[dict[str, Any]] = [g["weights"] for g in groups if isinstance(g.get("weights"), dict)]
    formats = {g["format"] if isinstance(g["format"], str) else None for g in groups if g.get("format")}
    fmt = qconfig.get("format") if not formats else formats.pop() if len(formats) == 1 else None
    distinct = {tuple(sorted((k, shown(v, 1000)) for k, v in w.items())) for w in weights}
    if not weights or len(distinct) > 1 or not isinstance(fmt, str):
        raise TensorguardError(f"{config_file(where)}: compressed-tensors config with {len(distinct)} "
                               "distinct weight quantizations and formats is not read (one is)")
    return dict(weights[0]), fmt


def _shape(stored: StoredTensors, info: TensorInfo, weight: str, where: Path) -> tuple[int, int]:
    """The (outputs, inputs) a ``weight_shape`` tensor holds."""
    values = stored.get(info.name).reshape(-1).tolist() if info.numel == 2 else []
    if len(values) != 2 or not all(0 <= v < 1 << 62 for v in values):
        held = f"it holds {shown(values)}" if values else f"it has {info.numel} entries"
        raise TensorguardError(f"{info.shard}: packed weight {weight!r}: {info.name!r} is not an "
                               f"(outputs, inputs) pair ({held})")
    return int(values[0]), int(values[1])


FORMAT = CompressedTensors()
