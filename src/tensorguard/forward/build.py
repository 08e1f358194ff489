"""The model's own forward pass: a ``transformers`` causal LM built from the configuration and the
tensors tensorguard reads (every format, packed quantized ones dequantized to float32).

The configuration is ``config.json`` beside the model, else the GGUF metadata translated by
``transformers``' own GGUF key map. The model is created on the meta device (no memory, no
random initialisation) and its parameters are then assigned the tensors read from the source;
buffers computed at construction (rotary frequencies) are recomputed by ``transformers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tensorguard.errors import ForwardUnavailableError, MissingExtraError
from tensorguard.inputs import read_json
from tensorguard.loading import ModelSource
from tensorguard.loading.gguf_file import read_gguf_header

FEATURE = "sensitivity metric 'forward' (the model's own forward pass)"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(FEATURE, "forward") from None
    return transformers


def _gguf_config(source: ModelSource) -> dict[str, Any]:
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    metadata = read_gguf_header(source.shards[0]).metadata
    arch = str(metadata.get("general.architecture", ""))
    if arch not in GGUF_CONFIG_MAPPING:
        raise ForwardUnavailableError(f"{source.name}: transformers cannot read the configuration of GGUF "
                                      f"architecture {arch!r}; put a config.json beside the model")
    config: dict[str, Any] = {"model_type": arch}
    mapping: dict[str, str | None] = GGUF_CONFIG_MAPPING[arch]  # type: ignore[assignment]
    for key, field in mapping.items():
        if field and f"{arch}.{key}" in metadata:
            config[field] = metadata[f"{arch}.{key}"]
    claims = source.claims
    if claims is not None and claims.tied_embeddings is not None:
        config["tie_word_embeddings"] = claims.tied_embeddings
    return config


def model_config(source: ModelSource) -> Any:
    """The ``transformers`` configuration of ``source``: ``config.json``, else GGUF metadata."""
    path = source.root / "config.json"
    if path.is_file():
        data = read_json(path, what="a model config")
    elif source.claims is None:
        raise ForwardUnavailableError(f"{source.name}: no config.json beside the model; the forward "
                                      "metric needs the model's configuration")
    transformers = _transformers()
    if not path.is_file():
        data = _gguf_config(source)
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ForwardUnavailableError(f"{path}: no model_type; the forward metric cannot build the model")
    fields = {k: v for k, v in data.items() if k != "model_type"}
    try:
        return transformers.AutoConfig.for_model(data["model_type"], **fields)
    except (ValueError, KeyError) as error:
        raise ForwardUnavailableError(f"{source.name}: transformers does not know model type "
                                      f"{data['model_type']!r} ({error})") from None


def _source_name(key: str, source: ModelSource) -> str | None:
    """The source tensor for model key ``key``: the same name, or without the model's root
    prefix (GPT-2 files store ``h.0...`` for ``transformer.h.0...``)."""
    for name in (key, key.split(".", 1)[-1]):
        if name in source.tensors:
            return name
    return None


def _some(items: list[str]) -> str:
    """The first three of ``items``, and how many more."""
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    return ", ".join(items[:3]) + more


@dataclass(frozen=True)
class Built:
    """The model in float32, evaluation mode, and the model's parameter name of each source tensor."""

    model: Any
    names: dict[str, str]


def build_model(source: ModelSource) -> Built:
    """The ``transformers`` causal LM of ``source``, its weights read from ``source``."""
    transformers = _transformers()
    config = model_config(source)
    try:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except ValueError as error:
        raise ForwardUnavailableError(f"{source.name}: transformers has no causal LM for model type "
                                      f"{config.model_type!r} ({str(error).splitlines()[0]})") from None
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    names, missing = {}, []
    for key in expected:
        name = _source_name(key, source)
        if name is not None:
            names[name] = key
        elif key not in tied and not (key == "lm_head.weight" and config.tie_word_embeddings):
            missing.append(key)
    if missing:
        raise ForwardUnavailableError(f"{source.name}: the {config.model_type} model needs tensors the "
                                      f"file lacks: {_some(missing)}")
    wrong = [f"{name} {source.info(name).shape} (config: {expected[key]})"
             for name, key in names.items() if source.info(name).shape != expected[key]]
    if wrong:  # checked on the meta device: a config that does not fit allocates nothing
        raise ForwardUnavailableError(f"{source.name}: the configuration does not fit the tensors: "
                                      f"{_some(wrong)}")
    model.to_empty(device="cpu")
    state = {key: source.read(name, dtype=torch.float32) for name, key in names.items()}
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    for module in model.modules():
        if module._non_persistent_buffers_set:  # rotary frequencies: computed, never stored
            model._init_weights(module)
    model.requires_grad_(False)
    return Built(model.eval(), names)
