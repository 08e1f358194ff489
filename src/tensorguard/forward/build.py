"""The model's own forward pass: a ``transformers`` causal LM built from the configuration and the
tensors tensorguard reads (every format, packed quantized ones dequantized to float32).

The configuration is ``config.json`` beside the model, else the GGUF metadata translated by
``transformers``' own GGUF key map. A skeleton of the model on the meta device (no memory)
checks that the configuration fits the tensors and the machine; ``transformers`` then loads the
tensors read from the source as it loads a checkpoint (``from_pretrained`` with a state dict).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from tensorguard.errors import ForwardUnavailableError, MissingExtraError
from tensorguard.inputs import read_json
from tensorguard.loading import ModelSource
from tensorguard.loading.gguf_file import read_gguf_header

FEATURE = "sensitivity metric 'forward' (the model's own forward pass)"
#: The largest share of the machine's memory the float32 model may take (the rest: activations,
#: the clean outputs kept per block, everything else running).
MEMORY_SHARE = 0.5


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
    beside = path.is_file()
    if not beside and source.claims is None:  # checked before the extra: the reason it can act on
        raise ForwardUnavailableError(f"{source.name}: no config.json beside the model; the forward "
                                      "metric needs the model's configuration")
    transformers = _transformers()
    data = read_json(path, what="a model config") if beside else _gguf_config(source)
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


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the platform says (``None`` where it does not)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
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


@contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """``transformers`` without its loading bar and warnings (unused tensors of the file are
    expected: tensorguard hands it every floating-point tensor the file holds)."""
    logging, verbosity = transformers.utils.logging, transformers.utils.logging.get_verbosity()
    bar = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def build_model(source: ModelSource) -> Built:
    """The ``transformers`` causal LM of ``source``, its weights read from ``source``.

    The shapes and the memory the model needs are checked on a skeleton on the meta device, before
    anything is allocated; then ``transformers`` loads the tensors as it loads a checkpoint, with
    its own conversions (renamed heads, experts stacked into one tensor, tied embeddings)."""
    transformers = _transformers()
    config = model_config(source)
    try:
        with torch.device("meta"):
            skeleton = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except ValueError as error:
        raise ForwardUnavailableError(f"{source.name}: transformers has no causal LM for model type "
                                      f"{config.model_type!r} ({str(error).splitlines()[0]})") from None
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    names = {name: key for key in expected if (name := _source_name(key, source)) is not None}
    wrong = [f"{name} {source.info(name).shape} (config: {expected[key]})"
             for name, key in names.items() if source.info(name).shape != expected[key]]
    if wrong:
        raise ForwardUnavailableError(f"{source.name}: the configuration does not fit the tensors: "
                                      f"{_some(wrong)}")
    needed = 4 * sum(t.numel() for t in (*skeleton.parameters(), *skeleton.buffers()))  # tied: once
    memory = physical_memory()
    if memory is not None and needed > MEMORY_SHARE * memory:
        raise ForwardUnavailableError(f"{source.name}: the model takes {needed / 2**20:,.0f} MiB in "
                                      f"float32, more than half of this machine's "
                                      f"{memory / 2**20:,.0f} MiB")
    state = {name: source.read(name, dtype=torch.float32)
             for name, info in source.tensors.items() if info.is_float}
    with _quiet(transformers):
        model, loading = type(skeleton).from_pretrained(None, config=config, state_dict=state,
                                                        dtype=torch.float32, output_loading_info=True)
    lacking = sorted(loading["missing_keys"]) + [str(k) for k in loading["mismatched_keys"]]
    if lacking:
        raise ForwardUnavailableError(f"{source.name}: the {config.model_type} model needs tensors the "
                                      f"file lacks: {_some(lacking)}")
    model.requires_grad_(False)
    return Built(model.eval(), names)
