"""The registry's data: one record per naming scheme. Adding an architecture is one record here
(and a test); every module that needs to know a weight's purpose reads it from these records.

Weights are listed in the order the synthetic generators create them (``optional`` ones are
never generated). Names are the full Hugging Face names; ``{block}`` is the block index.
"""

from __future__ import annotations

from tensorguard.architectures.registry import (
    REGISTRY,
    QkvOrder,
    Role,
    Scheme,
    Site,
    Slot,
    Space,
    Weight,
)

R, V, N, Q, KV = Space.RESIDUAL, Space.VOCAB, Space.NEURON, Space.Q, Space.KV
ATTN_IN, MLP_IN = (Site.ATTENTION_IN,), (Site.MLP_IN,)


def _w(name: str, slot: Slot, *axes: Space, optional: bool = False, role: Role | None = None,
       qkv_order: QkvOrder | None = None) -> Weight:
    return Weight(name, slot, axes, optional, role, qkv_order=qkv_order)


def _norm(name: str, optional: bool = False, axis: Space = R, feeds: tuple[Site, ...] = (),
          feeds_instead: tuple[str, tuple[Site, ...]] | None = None) -> Weight:
    return Weight(name, Slot.NORM, (axis,), optional, feeds=feeds, feeds_instead=feeds_instead)


_LLAMA_INPUT_NORM = _norm("model.layers.{block}.input_layernorm.weight", feeds=ATTN_IN)
# Llama's feeds the MLP; Gemma 2/3 add pre_feedforward_layernorm for that and use this one on the
# attention output
_LLAMA_POST_ATTENTION_NORM = _norm(
    "model.layers.{block}.post_attention_layernorm.weight", feeds=MLP_IN,
    feeds_instead=("model.layers.{block}.pre_feedforward_layernorm.weight", (Site.ATTENTION_OUT,)))


LLAMA = REGISTRY.register(Scheme(
    name="llama",
    models="Llama, Mistral, Mixtral (dense part), Qwen2/2.5/3, Gemma 1-3, SmolLM, Yi, and others "
           "saved as model.layers.N",
    before=(_w("model.embed_tokens.weight", Slot.EMBED, V, R),),
    blocks=(
        _LLAMA_INPUT_NORM,
        _w("model.layers.{block}.self_attn.q_proj.weight", Slot.Q, Q, R),
        _w("model.layers.{block}.self_attn.k_proj.weight", Slot.K, KV, R),
        _w("model.layers.{block}.self_attn.v_proj.weight", Slot.V, KV, R),
        _w("model.layers.{block}.self_attn.o_proj.weight", Slot.O, R, Q),
        _LLAMA_POST_ATTENTION_NORM,
        _w("model.layers.{block}.mlp.gate_proj.weight", Slot.GATE, N, R),
        _w("model.layers.{block}.mlp.up_proj.weight", Slot.UP, N, R),
        _w("model.layers.{block}.mlp.down_proj.weight", Slot.DOWN, R, N),
        # Qwen2 biases; Qwen3/Gemma3 per-head q/k norms; Gemma2/3 norms around the MLP
        _w("model.layers.{block}.self_attn.q_proj.bias", Slot.Q, Q, optional=True),
        _w("model.layers.{block}.self_attn.k_proj.bias", Slot.K, KV, optional=True),
        _w("model.layers.{block}.self_attn.v_proj.bias", Slot.V, KV, optional=True),
        _norm("model.layers.{block}.self_attn.q_norm.weight", True, Space.HEAD_DIM),
        _norm("model.layers.{block}.self_attn.k_norm.weight", True, Space.HEAD_DIM),
        _norm("model.layers.{block}.pre_feedforward_layernorm.weight", True, feeds=MLP_IN),
        _norm("model.layers.{block}.post_feedforward_layernorm.weight", True,
              feeds=(Site.MLP_OUT,)),
    ),
    after=(_norm("model.norm.weight"), _w("lm_head.weight", Slot.LM_HEAD, V, R)),
))

PHI3 = REGISTRY.register(Scheme(
    name="phi3",
    models="Phi-3, Phi-3.5 and Phi-4 (fused qkv_proj and gate_up_proj)",
    before=(_w("model.embed_tokens.weight", Slot.EMBED, V, R),),
    blocks=(
        _LLAMA_INPUT_NORM,
        _w("model.layers.{block}.self_attn.qkv_proj.weight", Slot.QKV, Space.QKV, R,
           qkv_order=QkvOrder.CONCAT),
        _w("model.layers.{block}.self_attn.o_proj.weight", Slot.O, R, Q),
        _LLAMA_POST_ATTENTION_NORM,
        _w("model.layers.{block}.mlp.gate_up_proj.weight", Slot.GATE_UP, Space.GATE_UP, R),
        _w("model.layers.{block}.mlp.down_proj.weight", Slot.DOWN, R, N),
    ),
    after=(_norm("model.norm.weight"), _w("lm_head.weight", Slot.LM_HEAD, V, R)),
))

PHI = REGISTRY.register(Scheme(
    name="phi",
    models="Phi-1, Phi-1.5 and Phi-2 (parallel attention and MLP, fc1/fc2)",
    before=(_w("model.embed_tokens.weight", Slot.EMBED, V, R),),
    blocks=(
        _LLAMA_INPUT_NORM,  # the one norm of a parallel block: the MLP reads it too
        _norm("model.layers.{block}.input_layernorm.bias"),
        _w("model.layers.{block}.self_attn.q_proj.weight", Slot.Q, Q, R),
        _w("model.layers.{block}.self_attn.k_proj.weight", Slot.K, KV, R),
        _w("model.layers.{block}.self_attn.v_proj.weight", Slot.V, KV, R),
        _w("model.layers.{block}.self_attn.dense.weight", Slot.O, R, Q),
        _w("model.layers.{block}.mlp.fc1.weight", Slot.UP, N, R),
        _w("model.layers.{block}.mlp.fc2.weight", Slot.DOWN, R, N),
    ),
    after=(_norm("model.final_layernorm.weight"), _w("lm_head.weight", Slot.LM_HEAD, V, R)),
))

STARCODER2 = REGISTRY.register(Scheme(
    name="starcoder2",
    models="StarCoder2 (model.layers.N with c_fc/c_proj MLPs)",
    before=(_w("model.embed_tokens.weight", Slot.EMBED, V, R),),
    blocks=(
        _LLAMA_INPUT_NORM,
        _w("model.layers.{block}.self_attn.q_proj.weight", Slot.Q, Q, R),
        _w("model.layers.{block}.self_attn.k_proj.weight", Slot.K, KV, R),
        _w("model.layers.{block}.self_attn.v_proj.weight", Slot.V, KV, R),
        _w("model.layers.{block}.self_attn.o_proj.weight", Slot.O, R, Q),
        _LLAMA_POST_ATTENTION_NORM,
        _w("model.layers.{block}.mlp.c_fc.weight", Slot.UP, N, R),
        _w("model.layers.{block}.mlp.c_proj.weight", Slot.DOWN, R, N),
    ),
    after=(_norm("model.norm.weight"), _w("lm_head.weight", Slot.LM_HEAD, V, R)),
))

META_LLAMA = REGISTRY.register(Scheme(
    name="meta-llama",
    models="Llama in Meta's original consolidated layout, InternLM-style feed_forward.w1/w2/w3",
    before=(_w("tok_embeddings.weight", Slot.EMBED, V, R),),
    blocks=(
        _norm("layers.{block}.attention_norm.weight", feeds=ATTN_IN),
        _w("layers.{block}.attention.wq.weight", Slot.Q, Q, R),
        _w("layers.{block}.attention.wk.weight", Slot.K, KV, R),
        _w("layers.{block}.attention.wv.weight", Slot.V, KV, R),
        _w("layers.{block}.attention.wo.weight", Slot.O, R, Q),
        _norm("layers.{block}.ffn_norm.weight", feeds=MLP_IN),
        _w("layers.{block}.feed_forward.w1.weight", Slot.GATE, N, R),
        _w("layers.{block}.feed_forward.w3.weight", Slot.UP, N, R),
        _w("layers.{block}.feed_forward.w2.weight", Slot.DOWN, R, N),
    ),
    after=(_norm("norm.weight"), _w("output.weight", Slot.LM_HEAD, V, R)),
))

GPT2 = REGISTRY.register(Scheme(
    name="gpt2",
    models="GPT-2 and DistilGPT-2 (Conv1D weights stored (in, out))",
    bare_root="transformer.",
    before=(_w("transformer.wte.weight", Slot.EMBED, V, R),
            _w("transformer.wpe.weight", Slot.POSITION_EMBED, Space.POSITION, R)),
    blocks=(
        _norm("transformer.h.{block}.ln_1.weight", feeds=ATTN_IN),
        _norm("transformer.h.{block}.ln_1.bias"),
        _w("transformer.h.{block}.attn.c_attn.weight", Slot.QKV, R, Space.QKV, qkv_order=QkvOrder.CONCAT),
        _w("transformer.h.{block}.attn.c_attn.bias", Slot.QKV, Space.QKV),
        _w("transformer.h.{block}.attn.c_proj.weight", Slot.O, Q, R),
        _norm("transformer.h.{block}.ln_2.weight", feeds=MLP_IN),
        _norm("transformer.h.{block}.ln_2.bias"),
        _w("transformer.h.{block}.mlp.c_fc.weight", Slot.UP, R, N),
        _w("transformer.h.{block}.mlp.c_proj.weight", Slot.DOWN, N, R),
        _w("transformer.h.{block}.attn.c_proj.bias", Slot.O, R, optional=True),
        _w("transformer.h.{block}.mlp.c_fc.bias", Slot.UP, N, optional=True),
        _w("transformer.h.{block}.mlp.c_proj.bias", Slot.DOWN, R, optional=True),
    ),
    after=(_norm("transformer.ln_f.weight"), _norm("transformer.ln_f.bias", True),
           _w("lm_head.weight", Slot.LM_HEAD, V, R, optional=True)),
))

GPTJ = REGISTRY.register(Scheme(
    name="gptj",
    models="GPT-J (transformer.h.N with q/k/v/out_proj and fc_in/fc_out)",
    before=(_w("transformer.wte.weight", Slot.EMBED, V, R),),
    blocks=(
        _norm("transformer.h.{block}.ln_1.weight", feeds=ATTN_IN),  # parallel: the MLP reads it too
        _w("transformer.h.{block}.attn.q_proj.weight", Slot.Q, Q, R),
        _w("transformer.h.{block}.attn.k_proj.weight", Slot.K, KV, R),
        _w("transformer.h.{block}.attn.v_proj.weight", Slot.V, KV, R),
        _w("transformer.h.{block}.attn.out_proj.weight", Slot.O, R, Q),
        _w("transformer.h.{block}.mlp.fc_in.weight", Slot.UP, N, R),
        _w("transformer.h.{block}.mlp.fc_out.weight", Slot.DOWN, R, N),
    ),
    after=(_norm("transformer.ln_f.weight"), _w("lm_head.weight", Slot.LM_HEAD, V, R)),
))

FALCON = REGISTRY.register(Scheme(
    name="falcon",
    models="Falcon (fused query_key_value, dense_h_to_4h/dense_4h_to_h)",
    before=(_w("transformer.word_embeddings.weight", Slot.EMBED, V, R),),
    blocks=(
        _norm("transformer.h.{block}.input_layernorm.weight", feeds=ATTN_IN),  # parallel (Falcon-7B)
        _w("transformer.h.{block}.self_attention.query_key_value.weight", Slot.QKV, Space.QKV, R,
           qkv_order=QkvOrder.GROUPED),
        _w("transformer.h.{block}.self_attention.dense.weight", Slot.O, R, Q),
        _w("transformer.h.{block}.mlp.dense_h_to_4h.weight", Slot.UP, N, R),
        _w("transformer.h.{block}.mlp.dense_4h_to_h.weight", Slot.DOWN, R, N),
        # Falcon-40B and -180B: a norm for each of the parallel attention and MLP
        _norm("transformer.h.{block}.ln_attn.weight", True, feeds=ATTN_IN),
        _norm("transformer.h.{block}.ln_mlp.weight", True, feeds=MLP_IN),
    ),
    after=(_norm("transformer.ln_f.weight"), _w("lm_head.weight", Slot.LM_HEAD, V, R)),
))

NEOX = REGISTRY.register(Scheme(
    name="neox",
    models="GPT-NeoX and Pythia",
    before=(_w("gpt_neox.embed_in.weight", Slot.EMBED, V, R),),
    blocks=(
        _norm("gpt_neox.layers.{block}.input_layernorm.weight", feeds=ATTN_IN),
        _w("gpt_neox.layers.{block}.attention.query_key_value.weight", Slot.QKV, Space.QKV, R,
           qkv_order=QkvOrder.GROUPED),
        _w("gpt_neox.layers.{block}.attention.dense.weight", Slot.O, R, Q),
        _norm("gpt_neox.layers.{block}.post_attention_layernorm.weight", feeds=MLP_IN),
        _w("gpt_neox.layers.{block}.mlp.dense_h_to_4h.weight", Slot.UP, N, R),
        _w("gpt_neox.layers.{block}.mlp.dense_4h_to_h.weight", Slot.DOWN, R, N),
    ),
    after=(_norm("gpt_neox.final_layer_norm.weight"),
           # the paper's substring rule reads "embed" in embed_out as an embedding
           _w("embed_out.weight", Slot.LM_HEAD, V, R, role=Role.EMBEDDING)),
))

BERT = REGISTRY.register(Scheme(
    name="bert",
    models="BERT, RoBERTa and other encoder.layer.N encoders",
    before=(
        _w("embeddings.word_embeddings.weight", Slot.EMBED, V, R),
        _w("embeddings.position_embeddings.weight", Slot.POSITION_EMBED, Space.POSITION, R),
        _w("embeddings.token_type_embeddings.weight", Slot.TOKEN_TYPE_EMBED, Space.TOKEN_TYPE, R),
        _norm("embeddings.LayerNorm.weight"),
    ),
    blocks=(
        _w("encoder.layer.{block}.attention.self.query.weight", Slot.Q, Q, R),
        _w("encoder.layer.{block}.attention.self.key.weight", Slot.K, KV, R),
        _w("encoder.layer.{block}.attention.self.value.weight", Slot.V, KV, R),
        _w("encoder.layer.{block}.attention.output.dense.weight", Slot.O, R, Q),
        _norm("encoder.layer.{block}.attention.output.LayerNorm.weight"),
        _w("encoder.layer.{block}.intermediate.dense.weight", Slot.UP, N, R),
        _w("encoder.layer.{block}.output.dense.weight", Slot.DOWN, R, N),
        _norm("encoder.layer.{block}.output.LayerNorm.weight"),
    ),
))

_T5_GATED = (  # T5 v1.1 and Flan-T5: a gated MLP
    _w("encoder.block.{block}.layer.1.DenseReluDense.wi_0.weight", Slot.GATE, N, R, optional=True),
    _w("encoder.block.{block}.layer.1.DenseReluDense.wi_1.weight", Slot.UP, N, R, optional=True),
)
T5 = REGISTRY.register(Scheme(
    name="t5",
    models="T5, Flan-T5 and mT5 (encoder.block.N / decoder.block.N)",
    before=(_w("shared.weight", Slot.EMBED, V, R),),
    blocks=(
        *(_w(f"encoder.block.{{block}}.layer.0.SelfAttention.{x}.weight", slot, *axes)
          for x, slot, axes in (("q", Slot.Q, (Q, R)), ("k", Slot.K, (KV, R)), ("v", Slot.V, (KV, R)),
                                ("o", Slot.O, (R, Q)))),
        _norm("encoder.block.{block}.layer.0.layer_norm.weight"),
        _w("encoder.block.{block}.layer.1.DenseReluDense.wi.weight", Slot.UP, N, R),
        _w("encoder.block.{block}.layer.1.DenseReluDense.wo.weight", Slot.DOWN, R, N),
        _norm("encoder.block.{block}.layer.1.layer_norm.weight"),
        *_T5_GATED,
        _w("encoder.block.{block}.layer.0.SelfAttention.relative_attention_bias.weight",
           Slot.RELATIVE_BIAS, Space.BUCKET, Space.HEADS, optional=True),
    ),
    extra_blocks=(
        *(_w(f"decoder.block.{{block}}.layer.{i}.{attn}.{x}.weight", slot, *axes, optional=True)
          for i, attn in ((0, "SelfAttention"), (1, "EncDecAttention"))
          for x, slot, axes in (("q", Slot.Q, (Q, R)), ("k", Slot.K, (KV, R)), ("v", Slot.V, (KV, R)),
                                ("o", Slot.O, (R, Q)))),
        *(_norm(f"decoder.block.{{block}}.layer.{i}.layer_norm.weight", True) for i in range(3)),
        _w("decoder.block.{block}.layer.2.DenseReluDense.wi.weight", Slot.UP, N, R, optional=True),
        _w("decoder.block.{block}.layer.2.DenseReluDense.wi_0.weight", Slot.GATE, N, R, optional=True),
        _w("decoder.block.{block}.layer.2.DenseReluDense.wi_1.weight", Slot.UP, N, R, optional=True),
        _w("decoder.block.{block}.layer.2.DenseReluDense.wo.weight", Slot.DOWN, R, N, optional=True),
    ),
    after=(_norm("encoder.final_layer_norm.weight"),
           _norm("decoder.final_layer_norm.weight", True),
           _w("lm_head.weight", Slot.LM_HEAD, V, R, optional=True)),
))
