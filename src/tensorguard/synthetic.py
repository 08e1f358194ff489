"""Tiny, real safetensors models with real tensor names, for the demo, the tests and benchmarks.

A ``ModelSpec`` names a scheme of the architecture registry and its sizes; the registry's records
give every tensor's name and shape (``tensor_shapes``). Weights come from a
seeded generator, so the same spec and seed always give the same model. Derivatives
(fine-tune-like noise, low-rank updates) are functions of a weight dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from tensorguard.architectures import REGISTRY, Slot, Space, Weight

Shapes = list[tuple[str, tuple[int, ...]]]


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a tiny model; ``scheme`` picks the tensor naming convention."""

    scheme: str = "llama"  # a scheme of the architecture registry: llama, gpt2, neox, bert, t5, ...
    hidden: int = 64
    layers: int = 2
    intermediate: int = 128
    vocab: int = 256
    heads: int = 4
    kv_heads: int | None = None
    positions: int = 64
    tied: bool = False  # no separate output head (the output reuses the embedding)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def _sizes(s: ModelSpec) -> dict[Space, int]:
    """The length of every space for this spec."""
    kv = (s.kv_heads or s.heads) * s.head_dim
    return {Space.RESIDUAL: s.hidden, Space.VOCAB: s.vocab, Space.POSITION: s.positions,
            Space.TOKEN_TYPE: 2, Space.NEURON: s.intermediate, Space.GATE_UP: 2 * s.intermediate,
            Space.Q: s.heads * s.head_dim, Space.KV: kv, Space.QKV: s.heads * s.head_dim + 2 * kv,
            Space.HEAD_DIM: s.head_dim, Space.HEADS: s.heads, Space.BUCKET: 32}


def tensor_shapes(spec: ModelSpec) -> Shapes:
    """The (name, shape) list of a model of this spec, in the registry's order: the scheme's
    required weights (optional ones and, when ``tied``, the output head left out)."""
    scheme = REGISTRY.schemes[spec.scheme]
    sizes = _sizes(spec)

    def entries(weights: tuple[Weight, ...], block: int | None = None) -> Shapes:
        return [(w.name.replace("{block}", str(block)), tuple(sizes[a] for a in w.axes))
                for w in weights
                if not w.optional and not (spec.tied and w.slot is Slot.LM_HEAD)]

    out = entries(scheme.before)
    for i in range(spec.layers):
        out += entries(scheme.blocks, i)
    return out + entries(scheme.after)


def llama_config(spec: ModelSpec) -> dict[str, object]:
    """The ``config.json`` of a ``llama``-scheme spec, as ``transformers`` reads it."""
    if spec.scheme != "llama":
        raise ValueError(f"llama_config needs the llama scheme, not {spec.scheme!r}")
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "hidden_size": spec.hidden, "num_hidden_layers": spec.layers,
            "intermediate_size": spec.intermediate, "vocab_size": spec.vocab,
            "num_attention_heads": spec.heads, "num_key_value_heads": spec.kv_heads or spec.heads,
            "max_position_embeddings": spec.positions, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": spec.tied}


def make_weights(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """Float32 weights: N(0, 0.02) matrices, norms near one, biases near zero."""
    gen = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for name, shape in tensor_shapes(spec):
        noise = torch.randn(shape, generator=gen)
        if len(shape) == 1:
            weights[name] = (noise * 0.02) if name.endswith(".bias") else 1.0 + 0.05 * noise
        else:
            weights[name] = noise * 0.02
    return weights


def finetune(weights: dict[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    """A fine-tune-like derivative: every tensor moved by relative Gaussian noise of ``scale``."""
    gen = torch.Generator().manual_seed(seed)
    return {n: w + scale * w.std() * torch.randn(w.shape, generator=gen) if w.numel() > 1 else w
            for n, w in weights.items()}


def low_rank_update(weights: dict[str, torch.Tensor], rank: int, scale: float,
                    seed: int) -> dict[str, torch.Tensor]:
    """A LoRA-merged-like derivative: each matrix plus a rank-``rank`` update of relative ``scale``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n, w in weights.items():
        if w.ndim == 2:
            b = torch.randn(w.shape[0], rank, generator=gen)
            a = torch.randn(rank, w.shape[1], generator=gen)
            delta = b @ a
            w = w + scale * w.norm() / delta.norm() * delta
        out[n] = w
    return out


def save_tokenizer(directory: str | Path, vocab: int | list[str]) -> Path:
    """A word-level ``tokenizer.json`` in ``directory`` (it serves every model file there):
    token strings ``tok0``, ``tok1``, ... for a vocabulary size, or the strings given."""
    tokens = [f"tok{i}" for i in range(vocab)] if isinstance(vocab, int) else list(vocab)
    path = Path(directory) / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = {"model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(tokens)}},
                 "added_tokens": []}
    path.write_text(json.dumps(tokenizer))
    return path


def save_model(weights: dict[str, torch.Tensor], path: str | Path,
               dtype: torch.dtype = torch.float32, shards: int = 1, index: bool = True,
               base_name: str = "model") -> Path:
    """Write ``weights`` as safetensors and return what to pass to tensorguard.

    ``shards == 1`` and ``path`` ending in ``.safetensors``: one file. Otherwise ``path`` is a
    directory: ``model.safetensors``, or ``shards`` files ``BASE-0000i-of-0000n.safetensors``
    with a ``model.safetensors.index.json`` when ``index``.
    """
    path = Path(path)
    cast = {n: w.to(dtype).contiguous() for n, w in weights.items()}
    if shards == 1 and path.suffix == ".safetensors":
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(cast, str(path))
        return path
    path.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        save_file(cast, str(path / "model.safetensors"))
        return path
    names = list(cast)
    per = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        fname = f"{base_name}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: cast[n] for n in names[i * per:(i + 1) * per]}
        save_file(part, str(path / fname))
        weight_map.update(dict.fromkeys(part, fname))
    if index:
        meta = {"metadata": {"total_size": sum(t.nbytes for t in cast.values())},
                "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(meta, indent=2))
    return path


def save_lora_adapter(path: str | Path, tensors: dict[str, torch.Tensor], r: int, lora_alpha: float,
                      **config: object) -> Path:
    """Write a PEFT LoRA adapter directory: ``adapter_model.safetensors`` holding ``tensors``
    (PEFT names, e.g. ``base_model.model.<module>.lora_A.weight``) and ``adapter_config.json``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(path / "adapter_model.safetensors"))
    settings = {"peft_type": "LORA", "r": r, "lora_alpha": lora_alpha, **config}
    (path / "adapter_config.json").write_text(json.dumps(settings, indent=2))
    return path
