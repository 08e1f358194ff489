"""Which role a tensor plays (embedding, attention, ffn, norm, other) and which block it is in.

The naming knowledge is data: ordered regular-expression rules covering Llama/Mistral/Qwen2/
Gemma/Phi-3 (``model.layers.N``), GPT-2/GPT-J/GPT-NeoX/Falcon (``transformer.h.N``,
``gpt_neox.layers.N``), BERT-style encoders (``encoder.layer.N``) and T5 (``encoder.block.N``).
The first rule that matches wins.
"""

from __future__ import annotations

import re
from enum import Enum


class Role(str, Enum):
    EMBEDDING = "embedding"
    ATTENTION = "attention"
    FFN = "ffn"
    NORM = "norm"
    OTHER = "other"


_RULES: tuple[tuple[str, Role], ...] = (
    # norms first: ``post_attention_layernorm`` is a norm, not attention
    (r"(^|\.)(\w*norm\w*|ln_\w+|ln\d*|layer_norm\w*|LayerNorm|final_layer_norm)(\.|$)", Role.NORM),
    (r"(^|\.)(embed_tokens|embed_in|embed_out|wte|wpe|word_embeddings|position_embeddings|"
     r"token_type_embeddings|embeddings|shared|relative_attention_bias|embed\w*)(\.|$)",
     Role.EMBEDDING),
    (r"(^|\.)(self_attn|attn|attention|self_attention|SelfAttention|EncDecAttention|"
     r"cross_attn|crossattention|c_attn|query_key_value|q_proj|k_proj|v_proj|o_proj|qkv_proj|"
     r"Wqkv|out_proj)(\.|$)", Role.ATTENTION),
    (r"(^|\.)(mlp|ffn|feed_forward|DenseReluDense|intermediate|block_sparse_moe|experts|"
     r"c_fc|gate_proj|up_proj|down_proj|gate_up_proj|fc_in|fc_out|fc1|fc2|dense_h_to_4h|"
     r"dense_4h_to_h|wi|wi_0|wi_1|wo)(\.|$)", Role.FFN),
    # BERT: ``encoder.layer.N.output.dense`` (after attention.output.dense was matched above)
    (r"\.layer\.\d+\.output\.dense(\.|$)", Role.FFN),
)
_COMPILED = tuple((re.compile(p), role) for p, role in _RULES)

_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def role(name: str) -> Role:
    """The role of the tensor called ``name``."""
    for pattern, r in _COMPILED:
        if pattern.search(name):
            return r
    return Role.OTHER


def block_index(name: str) -> int | None:
    """The index of the transformer block holding ``name``, or ``None`` outside any block."""
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None
