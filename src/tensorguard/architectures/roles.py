"""The role and block of any tensor name: from the registry, else from keyword rules.

Names the registry knows take their role from their slot (the paper's view of it). Names no
scheme lists (mixture-of-experts weights, architectures not yet registered, adapters' extras) fall
back to ordered keyword rules, the first match winning, so every model still gets roles.
"""

from __future__ import annotations

import re

from tensorguard.architectures.registry import Role, lookup

#: Keyword rules for names no scheme lists, checked in order (norms first:
#: ``post_attention_layernorm`` is a norm, not attention).
KEYWORD_ROLES: tuple[tuple[str, Role], ...] = (
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
)
_KEYWORDS = tuple((re.compile(pattern), r) for pattern, r in KEYWORD_ROLES)
_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def role(name: str) -> Role:
    """The paper's layer type of tensor ``name``."""
    located = lookup(name)
    if located is not None:
        return located.weight.paper_role
    return next((r for pattern, r in _KEYWORDS if pattern.search(name)), Role.OTHER)


def block_index(name: str) -> int | None:
    """The index of the transformer block holding ``name``, or ``None`` outside any block."""
    located = lookup(name)
    if located is not None:
        return located.block
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None
