"""Per-architecture knowledge for reading GGUF files back as the Hugging Face model they came from.

Data only. For each GGUF architecture tensorguard maps: the Hugging Face module names of the
model (outside and inside a block) and the conversions llama.cpp's ``convert_hf_to_gguf.py``
applies to them, which the reader undoes. The GGUF name of each Hugging Face module comes from
the ``gguf`` package's own ``TensorNameMap``, so no GGUF naming is kept here.

Conversions (checked against llama.cpp's ``conversion/`` modules):

- ``qk_permuted`` (``LlamaModel``: llama, also Mistral and Mixtral checkpoints): the rows of
  ``q_proj`` (and ``k_proj``, per KV head) are interleaved per head for llama.cpp's RoPE,
  ``reshape(heads, 2, head_dim // 2, ...).swapaxes(1, 2)``.
- ``norm_offset`` (Gemma, Gemma 2, Gemma 3): every ``*norm.weight`` is stored plus 1.
- ``transposed`` (GPT-2): ``Conv1D`` weights, stored ``(in, out)`` by Hugging Face, are written
  transposed.
- ``fused_qkv``: GPT-NeoX's per-head ``[q, k, v]`` rows are regrouped as ``[all q, all k, all v]``;
  Falcon's per-KV-group ``[q..., k, v]`` rows likewise.
- Qwen2/Qwen3 and Phi-3 are written unchanged.

A model whose embeddings are tied has no ``output`` tensor in GGUF, as in its safetensors.
``generated`` tensors are computed by the converter (RoPE frequency factors), not model weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class FusedQkv(str, Enum):
    """How the Hugging Face rows of a fused query/key/value matrix are ordered."""

    NEOX = "neox"  # (heads, 3, head_dim)
    FALCON = "falcon"  # (kv_heads, heads / kv_heads + 2, head_dim)


@dataclass(frozen=True)
class GgufArch:
    """How one GGUF architecture's tensors relate to its Hugging Face checkpoint."""

    stack: str  # prefix of block modules: ``{stack}.{index}.{module}``
    top: tuple[str, ...]  # modules outside the blocks
    block: tuple[str, ...]  # modules inside each block
    qk_permuted: bool = False
    norm_offset: float = 0.0
    transposed: tuple[str, ...] = ()  # block modules stored (in, out) by Hugging Face
    fused_qkv: tuple[str, FusedQkv] | None = None  # (block module, its row order)
    # (GGUF tensor whose presence selects it, replacement block modules): layout variants
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    generated: tuple[str, ...] = field(
        default=("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"))


_LLAMA_TOP = ("model.embed_tokens", "model.norm", "lm_head")
_LLAMA_BLOCK = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                "mlp.down_proj")
_QK_NORM = ("self_attn.q_norm", "self_attn.k_norm")
_SANDWICH = ("pre_feedforward_layernorm", "post_feedforward_layernorm")
_FALCON_BLOCK = ("self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h",
                 "mlp.dense_4h_to_h")

#: GGUF ``general.architecture`` -> how to read it back.
ARCHITECTURES: dict[str, GgufArch] = {
    "llama": GgufArch("model.layers", _LLAMA_TOP, _LLAMA_BLOCK, qk_permuted=True),
    "qwen2": GgufArch("model.layers", _LLAMA_TOP, _LLAMA_BLOCK),
    "qwen3": GgufArch("model.layers", _LLAMA_TOP, _LLAMA_BLOCK + _QK_NORM),
    "gemma": GgufArch("model.layers", _LLAMA_TOP, _LLAMA_BLOCK, norm_offset=1.0),
    "gemma2": GgufArch("model.layers", _LLAMA_TOP, _LLAMA_BLOCK + _SANDWICH, norm_offset=1.0),
    "gemma3": GgufArch("model.layers", _LLAMA_TOP, _LLAMA_BLOCK + _SANDWICH + _QK_NORM,
                       norm_offset=1.0),
    "phi3": GgufArch("model.layers", _LLAMA_TOP,
                     ("input_layernorm", "self_attn.qkv_proj", "self_attn.o_proj",
                      "post_attention_layernorm", "mlp.gate_up_proj", "mlp.down_proj")),
    "gpt2": GgufArch("transformer.h", ("transformer.wte", "transformer.wpe", "transformer.ln_f",
                                       "lm_head"),
                     ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"),
                     transposed=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")),
    "gptneox": GgufArch("gpt_neox.layers", ("gpt_neox.embed_in", "gpt_neox.final_layer_norm",
                                            "embed_out"),
                        ("input_layernorm", "attention.query_key_value", "attention.dense",
                         "post_attention_layernorm", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
                        fused_qkv=("attention.query_key_value", FusedQkv.NEOX)),
    # Falcon-7B has one ``input_layernorm``; Falcon-40B/180B ``ln_attn`` and ``ln_mlp``.
    "falcon": GgufArch("transformer.h", ("transformer.word_embeddings", "transformer.ln_f", "lm_head"),
                       ("input_layernorm", *_FALCON_BLOCK),
                       fused_qkv=("self_attention.query_key_value", FusedQkv.FALCON),
                       variants=(("blk.0.attn_norm_2.weight", ("ln_attn", "ln_mlp", *_FALCON_BLOCK)),)),
}
#: Hugging Face tensor suffixes tried on every module.
SUFFIXES = (".weight", ".bias")
