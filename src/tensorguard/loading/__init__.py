"""Model loading: safetensors (plain or packed-quantized), GGUF and LoRA adapters behind one lazy,
header-first interface."""

from __future__ import annotations

from pathlib import Path

from tensorguard.errors import TensorguardError
from tensorguard.loading.claims import BaseModelClaim, GgufClaims
from tensorguard.loading.formats import Quantization, WeightFormat
from tensorguard.loading.header import FLOAT_DTYPES, TensorInfo
from tensorguard.loading.layouts import Layout, resolve
from tensorguard.loading.lora import LoraSource
from tensorguard.loading.source import ModelSource

__all__ = ["FLOAT_DTYPES", "BaseModelClaim", "GgufClaims", "Layout", "LoraSource", "ModelSource",
           "Quantization", "TensorInfo", "WeightFormat", "open_model"]


def open_model(path: str | Path, base: str | Path | None = None,
               name: str | None = None) -> ModelSource:
    """Open the model at ``path`` (safetensors file, directory, index or shard; GGUF file or split
    set; packed-quantized checkpoint folder; or LoRA adapter with ``base``).

    Only headers are read here; tensors are read one at a time by ``ModelSource.read``.
    """
    resolved = resolve(path)
    if resolved.layout is Layout.LORA:
        if base is None:
            raise TensorguardError(f"{path}: is a LoRA adapter; pass --base with its base model")
        return LoraSource(resolved, open_model(base), name=name)
    if base is not None:
        raise TensorguardError(f"{path}: --base is only for LoRA adapter directories")
    return ModelSource(resolved, name=name)
