"""Tiny, real safetensors models with real tensor names, for the demo, the tests and benchmarks.

Each naming scheme is a list of (name, shape) built from a ``ModelSpec``; weights come from a
seeded generator, so the same spec and seed always give the same model. Derivatives
(fine-tune-like noise, low-rank updates) are functions of a weight dict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

Shapes = list[tuple[str, tuple[int, ...]]]


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a tiny model; ``scheme`` picks the tensor naming convention."""

    scheme: str = "llama"  # llama | gpt2 | neox | bert | t5
    hidden: int = 64
    layers: int = 2
    intermediate: int = 128
    vocab: int = 256
    heads: int = 4
    kv_heads: int | None = None
    positions: int = 64
    tied: bool = False  # llama only: no lm_head (the output reuses the embedding)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def _llama(s: ModelSpec) -> Shapes:
    kv = (s.kv_heads or s.heads) * s.head_dim
    out: Shapes = [("model.embed_tokens.weight", (s.vocab, s.hidden))]
    for i in range(s.layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (s.hidden,)),
                (p + "self_attn.q_proj.weight", (s.hidden, s.hidden)),
                (p + "self_attn.k_proj.weight", (kv, s.hidden)),
                (p + "self_attn.v_proj.weight", (kv, s.hidden)),
                (p + "self_attn.o_proj.weight", (s.hidden, s.hidden)),
                (p + "post_attention_layernorm.weight", (s.hidden,)),
                (p + "mlp.gate_proj.weight", (s.intermediate, s.hidden)),
                (p + "mlp.up_proj.weight", (s.intermediate, s.hidden)),
                (p + "mlp.down_proj.weight", (s.hidden, s.intermediate))]
    out.append(("model.norm.weight", (s.hidden,)))
    return out if s.tied else [*out, ("lm_head.weight", (s.vocab, s.hidden))]


def _gpt2(s: ModelSpec) -> Shapes:  # Conv1D: weights stored (in, out)
    out: Shapes = [("transformer.wte.weight", (s.vocab, s.hidden)),
                   ("transformer.wpe.weight", (s.positions, s.hidden))]
    for i in range(s.layers):
        p = f"transformer.h.{i}."
        out += [(p + "ln_1.weight", (s.hidden,)), (p + "ln_1.bias", (s.hidden,)),
                (p + "attn.c_attn.weight", (s.hidden, 3 * s.hidden)),
                (p + "attn.c_attn.bias", (3 * s.hidden,)),
                (p + "attn.c_proj.weight", (s.hidden, s.hidden)),
                (p + "ln_2.weight", (s.hidden,)), (p + "ln_2.bias", (s.hidden,)),
                (p + "mlp.c_fc.weight", (s.hidden, s.intermediate)),
                (p + "mlp.c_proj.weight", (s.intermediate, s.hidden))]
    return out + [("transformer.ln_f.weight", (s.hidden,))]


def _neox(s: ModelSpec) -> Shapes:
    out: Shapes = [("gpt_neox.embed_in.weight", (s.vocab, s.hidden))]
    for i in range(s.layers):
        p = f"gpt_neox.layers.{i}."
        out += [(p + "input_layernorm.weight", (s.hidden,)),
                (p + "attention.query_key_value.weight", (3 * s.hidden, s.hidden)),
                (p + "attention.dense.weight", (s.hidden, s.hidden)),
                (p + "post_attention_layernorm.weight", (s.hidden,)),
                (p + "mlp.dense_h_to_4h.weight", (s.intermediate, s.hidden)),
                (p + "mlp.dense_4h_to_h.weight", (s.hidden, s.intermediate))]
    return out + [("gpt_neox.final_layer_norm.weight", (s.hidden,)),
                  ("embed_out.weight", (s.vocab, s.hidden))]


def _bert(s: ModelSpec) -> Shapes:
    out: Shapes = [("embeddings.word_embeddings.weight", (s.vocab, s.hidden)),
                   ("embeddings.position_embeddings.weight", (s.positions, s.hidden)),
                   ("embeddings.token_type_embeddings.weight", (2, s.hidden)),
                   ("embeddings.LayerNorm.weight", (s.hidden,))]
    for i in range(s.layers):
        p = f"encoder.layer.{i}."
        out += [(p + f"attention.self.{x}.weight", (s.hidden, s.hidden))
                for x in ("query", "key", "value")]
        out += [(p + "attention.output.dense.weight", (s.hidden, s.hidden)),
                (p + "attention.output.LayerNorm.weight", (s.hidden,)),
                (p + "intermediate.dense.weight", (s.intermediate, s.hidden)),
                (p + "output.dense.weight", (s.hidden, s.intermediate)),
                (p + "output.LayerNorm.weight", (s.hidden,))]
    return out


def _t5(s: ModelSpec) -> Shapes:
    out: Shapes = [("shared.weight", (s.vocab, s.hidden))]
    for i in range(s.layers):
        p = f"encoder.block.{i}.layer."
        out += [(p + f"0.SelfAttention.{x}.weight", (s.hidden, s.hidden)) for x in "qkvo"]
        out += [(p + "0.layer_norm.weight", (s.hidden,)),
                (p + "1.DenseReluDense.wi.weight", (s.intermediate, s.hidden)),
                (p + "1.DenseReluDense.wo.weight", (s.hidden, s.intermediate)),
                (p + "1.layer_norm.weight", (s.hidden,))]
    return out + [("encoder.final_layer_norm.weight", (s.hidden,))]


SCHEMES: dict[str, Callable[[ModelSpec], Shapes]] = {
    "llama": _llama, "gpt2": _gpt2, "neox": _neox, "bert": _bert, "t5": _t5,
}


def tensor_shapes(spec: ModelSpec) -> Shapes:
    """The (name, shape) list of a model of this spec, in definition order."""
    return SCHEMES[spec.scheme](spec)


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
