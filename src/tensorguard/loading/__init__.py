"""Model loading: safetensors (plain or packed-quantized), GGUF and LoRA adapters behind one lazy,
header-first interface."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Union

from tensorguard.errors import UsageError
from tensorguard.loading.claims import BaseModelClaim, GgufClaims
from tensorguard.loading.formats import Quantization, WeightFormat
from tensorguard.loading.header import FLOAT_DTYPES, TensorInfo
from tensorguard.loading.layouts import Layout, resolve
from tensorguard.loading.lora import LoraSource
from tensorguard.loading.reference import is_reference, parse_reference
from tensorguard.loading.source import ModelSource

__all__ = ["FLOAT_DTYPES", "BaseModelClaim", "GgufClaims", "Layout", "LoraSource", "ModelInput",
           "ModelSource", "Quantization", "TensorInfo", "WeightFormat", "is_reference", "model_path",
           "open_model", "opened"]

#: What every verb takes as a model: a path, or a source the caller opened (and closes).
ModelInput = Union[str, "PathLike[str]", ModelSource]


def open_model(path: str | PathLike[str], *, base: str | PathLike[str] | ModelSource | None = None,
               name: str | None = None) -> ModelSource:
    """Open the model at ``path`` (safetensors file, directory, index or shard; GGUF file or split
    set; packed-quantized checkpoint folder; or LoRA adapter with ``base``).

    ``path`` may also be a remote reference (``hf://ORG/NAME[@REVISION][/PATH]``, or an
    ``https://`` URL of a model file): its files are mirrored sparsely and only the byte ranges
    read are fetched (``loading.mirror``); ``source.origin`` is then the reference pinned to its
    commit.

    Only headers are read here; tensors are read one at a time by ``ModelSource.read``.
    """
    ref = parse_reference(path) if isinstance(path, str) else None
    if ref is not None:
        from tensorguard.loading.mirror import materialize

        mirrored = materialize(ref)
        source = open_model(mirrored.path, base=base, name=name)
        source.origin = mirrored.pinned
        return source
    resolved = resolve(path)
    if resolved.layout is Layout.LORA:
        if base is None:
            raise UsageError(f"{path}: is a LoRA adapter; pass its base model with {{base}}", "base")
        base_source = base if isinstance(base, ModelSource) else open_model(base)
        return LoraSource(resolved, base_source, name=name)
    if base is not None:
        raise UsageError(f"{path}: {{base}} is only for LoRA adapter directories", "base")
    return ModelSource(resolved, name=name)


def model_path(model: str | PathLike[str]) -> Path:
    """Where ``model``'s files are on disk: the path itself, or for a remote reference its sparse
    mirror (laid out once per process; only small side files are fetched)."""
    ref = parse_reference(model) if isinstance(model, str) else None
    if ref is None:
        return Path(model)
    from tensorguard.loading.mirror import materialize

    return materialize(ref).path


@contextmanager
def opened(model: ModelInput, *, base: ModelInput | None = None,
           name: str | None = None) -> Iterator[ModelSource]:
    """``model`` as an open source: a path is opened here and closed after; a ``ModelSource``
    given by the caller is used as it is (``base`` and ``name`` then do not apply)."""
    if isinstance(model, ModelSource):
        if base is not None or name is not None:
            raise UsageError("{base} and {name} apply to a model given by path, not to an open "
                             "ModelSource", "base", "name")
        yield model
        return
    with open_model(model, base=base, name=name) as source:
        yield source
