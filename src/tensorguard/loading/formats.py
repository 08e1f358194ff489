"""What a model's weights are stored as: the container format and, per tensor, its quantization."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class WeightFormat(str, Enum):
    """How a model's weights are stored on disk."""

    SAFETENSORS = "safetensors"  # plain floating-point tensors
    GGUF = "gguf"
    GPTQ = "gptq"
    AWQ = "awq"
    BNB_4BIT = "bitsandbytes-4bit"
    BNB_8BIT = "bitsandbytes-8bit"
    FP8 = "fp8"  # float8 weights with block, channel or tensor scales (``weight_scale_inv``)
    COMPRESSED_TENSORS = "compressed-tensors"
    MLX = "mlx"


@dataclass(frozen=True)
class Quantization:
    """How one logical weight tensor is quantized (``TensorInfo.quant``; ``None`` for plain floats).

    ``scheme`` names the code (``Q4_K``, ``gptq-int4``, ``nf4``, ``fp8-e4m3`` ...); ``bits`` is the
    width of one code; ``bits_per_weight`` counts every stored bit (codes, scales, zeros, group
    indices) per logical weight; ``group_shape`` is the (rows, columns) block of the logical
    matrix that shares one scale, or ``None`` for a single scale per tensor.
    """

    scheme: str
    bits: int
    bits_per_weight: float
    group_shape: tuple[int, int] | None

    @property
    def group_size(self) -> int | None:
        """Weights sharing one scale."""
        return None if self.group_shape is None else math.prod(self.group_shape)
