"""MLX quantized checkpoints (mlx-lm): affine group quantization.

Per weight ``P.weight`` of logical shape (N, K), with b bits and groups of g inputs (from
``config.json``'s ``quantization``: ``{"bits": 4, "group_size": 64}``, optionally overridden per
module path):

- ``P.weight`` uint32 (N, K*b/32): each row's codes as one little-endian bit stream;
- ``P.scales`` and ``P.biases`` (N, K/g), in the model's float dtype.

``W[n, k] = scales[n, k // g] * q[n, k] + biases[n, k // g]``. Rows are read directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorguard.errors import TensorguardError
from tensorguard.loading.formats import WeightFormat
from tensorguard.loading.header import FLOAT_DTYPES, TensorInfo
from tensorguard.loading.quant.base import (
    PackedFormat,
    PackedTensor,
    StoredTensors,
    config_file,
    expect,
    inconsistent,
    quantization,
    require,
    to_numpy,
    unpack,
)
from tensorguard.validation import shown

if TYPE_CHECKING:
    import torch

BITS = (2, 3, 4, 5, 6, 8)


class MlxTensor(PackedTensor):
    def __init__(self, info: TensorInfo, prefix: str, parts: tuple[str, ...], bits: int,
                 group: int) -> None:
        super().__init__(info, parts)
        self.prefix, self.bits, self.group = prefix, bits, group

    def read(self, stored: StoredTensors, rows: slice) -> torch.Tensor:
        import torch

        k = self.info.shape[1]
        codes = unpack(to_numpy(stored.get(self.prefix + ".weight", rows=rows)), self.bits, axis=1)
        groups = torch.arange(k) // self.group
        scales = stored.get(self.prefix + ".scales", rows=rows).float()[:, groups]
        biases = stored.get(self.prefix + ".biases", rows=rows).float()[:, groups]
        return scales * torch.from_numpy(codes[:, :k]).float() + biases


def _packed_prefixes(infos: Mapping[str, TensorInfo]) -> Iterator[str]:
    """Modules stored MLX's way: ``.biases`` beside a ``U32`` ``.weight`` of packed codes."""
    for name in infos:
        prefix = name.removesuffix(".biases")
        weight = infos.get(prefix + ".weight")
        if name.endswith(".biases") and weight is not None and weight.dtype == "U32":
            yield prefix


class Mlx(PackedFormat):
    format = WeightFormat.MLX

    def recognises(self, infos: Mapping[str, TensorInfo], qconfig: Mapping[str, Any]) -> bool:
        return "quant_method" not in qconfig and any(True for _ in _packed_prefixes(infos))

    def plan(self, infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
             stored: StoredTensors) -> dict[str, PackedTensor]:
        settings = config.get("quantization")
        if not isinstance(settings, dict):
            raise TensorguardError(f"{config_file(where)}: MLX quantized weights but no 'quantization' "
                                   "settings (bits, group_size) in config.json")
        out: dict[str, PackedTensor] = {}
        for prefix in _packed_prefixes(infos):
            own = settings.get(prefix)
            tensor = self._weight(infos, prefix, own if isinstance(own, dict) else settings, where)
            out[tensor.info.name] = tensor
        return out

    def _weight(self, infos: Mapping[str, TensorInfo], prefix: str, settings: Mapping[str, Any],
                where: Path) -> MlxTensor:
        weight = prefix + ".weight"
        codes, biases = infos[weight], infos[prefix + ".biases"]
        scales = require(infos, prefix + ".scales", weight, "scales", where)
        mode, bits, group = (settings.get(k, d) for k, d in (("mode", "affine"), ("bits", 0),
                                                             ("group_size", 0)))
        if mode != "affine" or type(bits) is not int or bits not in BITS or type(group) is not int \
                or group <= 0:
            raise TensorguardError(f"{config_file(where)}: packed weight {weight!r}: MLX {shown(mode)} "
                                   f"quantization with {shown(bits)} bits in groups of {shown(group)} is "
                                   f"not read (affine, {', '.join(map(str, BITS))} bits)")
        expect(scales, weight, where, dtypes=FLOAT_DTYPES)
        expect(biases, weight, where, dtypes=FLOAT_DTYPES)
        if codes.ndim != 2 or scales.ndim != 2 or biases.shape != scales.shape:
            raise inconsistent(where, weight, f"codes {list(codes.shape)}, scales "
                               f"{list(scales.shape)} and biases {list(biases.shape)} do not match")
        n, k = codes.shape[0], scales.shape[1] * group
        if scales.shape[0] != n or codes.shape[1] * 32 != k * bits:
            raise inconsistent(where, weight, f"{codes.shape[1]} words of {bits}-bit codes per row "
                               f"and {scales.shape[1]} scales per row do not fit groups of {group}")
        parts = [codes, scales, biases]
        scheme = f"mlx-int{bits}"
        info = TensorInfo(weight, (n, k), scheme, codes.shard,
                          quantization(scheme, bits, parts, n * k, (1, group)))
        return MlxTensor(info, prefix, tuple(p.name for p in parts), bits, group)


FORMAT = Mlx()
