"""Packed (quantized) weights in safetensors checkpoints: a registry of format readers.

Each format is one module with a ``PackedFormat`` (``base``): recognised from the tensor names and
``config.json``'s ``quantization_config``, it plans every packed weight as one logical float tensor
and reads it dequantized by row blocks. Unrecognised quantization is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorguard.errors import TensorguardError
from tensorguard.loading.formats import WeightFormat
from tensorguard.loading.header import INTEGER_DTYPES, TensorInfo
from tensorguard.loading.quant import awq, bnb, compressed, fp8, gptq, mlx
from tensorguard.loading.quant.base import PackedFormat, PackedTensor, StoredTensors, quant_config
from tensorguard.validation import shown

__all__ = ["FORMATS", "PackedFormat", "PackedTensor", "StoredTensors", "plan_packed"]

FORMATS: dict[WeightFormat, PackedFormat] = {f.format: f for f in (
    gptq.FORMAT, awq.FORMAT, bnb.FOUR_BIT, bnb.EIGHT_BIT, fp8.FORMAT, compressed.FORMAT, mlx.FORMAT)}
_WEIGHT_ENDINGS = ("weight", "_blocks")  # not buffers such as BERT's integer position_ids


def plan_packed(infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
                stored: StoredTensors) -> tuple[WeightFormat, dict[str, PackedTensor]]:
    """The checkpoint's format and its packed weights by logical name (none for plain floats)."""
    qconfig = quant_config(config)
    found = [f for f in FORMATS.values() if f.recognises(infos, qconfig)]
    if len(found) > 1:
        raise TensorguardError(f"{where}: the tensor names fit several packed formats "
                               f"({', '.join(f.format.value for f in found)}); add config.json's "
                               "quantization_config to say which")
    if found:
        return found[0].format, found[0].plan(infos, config, where, stored)
    method = qconfig.get("quant_method")
    if method is not None:
        readable = sorted({m for f in FORMATS.values() for m in f.quant_methods})
        raise TensorguardError(f"{where}: config.json says quant_method {shown(method)}, but the tensors "
                               f"are not in a layout tensorguard reads ({', '.join(readable)}, mlx)")
    packed = next((i for i in infos.values() if i.ndim >= 2 and i.dtype in INTEGER_DTYPES
                   and i.name.endswith(_WEIGHT_ENDINGS)), None)
    if packed is not None:
        raise TensorguardError(f"{where}: integer-packed weights of an unrecognised format (e.g. "
                               f"{packed.name!r}, {packed.dtype}) and no quantization_config in "
                               "config.json")
    return WeightFormat.SAFETENSORS, {}
