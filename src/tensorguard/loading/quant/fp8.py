"""FP8 checkpoints with scales (``quant_method: fp8``, as published for DeepSeek-V3, Qwen3-FP8 ...).

Each linear weight is float8 (E4M3, or E5M2) with a float32 ``weight_scale_inv`` that, despite its
name, multiplies: ``W = weight * weight_scale_inv`` expanded over ``weight_block_size`` blocks
(typically 128x128), or per channel or per tensor when the scale has that shape. Static activation
scales (``input_scale``, ``activation_scale``) are consumed and not listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorguard.loading.formats import WeightFormat
from tensorguard.loading.header import TensorInfo
from tensorguard.loading.quant.base import (
    PackedFormat,
    PackedTensor,
    StoredTensors,
    quant_config,
    require,
)
from tensorguard.loading.quant.scaled import scaled_tensor

SCALE = ".weight_scale_inv"
ACTIVATION_SCALES = (".input_scale", ".activation_scale")


class Fp8(PackedFormat):
    format = WeightFormat.FP8
    quant_methods = ("fp8",)
    markers = (SCALE,)

    def plan(self, infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
             stored: StoredTensors) -> dict[str, PackedTensor]:
        block = quant_config(config).get("weight_block_size")
        out: dict[str, PackedTensor] = {}
        for name in infos:
            if name.endswith(SCALE):
                prefix = name.removesuffix(SCALE)
                weight = prefix + ".weight"
                require(infos, weight, weight, "float8 codes", where)
                out[weight] = scaled_tensor(infos, weight, name, None, block=block, factor=1.0,
                                            where=where, extra=[prefix + s for s in ACTIVATION_SCALES])
        return out


FORMAT = Fp8()
