"""Tensor roles and block indices across naming schemes, and agreement with the paper's rules."""

from __future__ import annotations

import pytest

from tensorguard.architecture import Role, block_index, role
from tensorguard.synthetic import SCHEMES, ModelSpec, tensor_shapes

CASES = [
    ("model.embed_tokens.weight", Role.EMBEDDING, None),
    ("model.layers.0.self_attn.q_proj.weight", Role.ATTENTION, 0),
    ("model.layers.12.self_attn.qkv_proj.weight", Role.ATTENTION, 12),
    ("model.layers.3.mlp.gate_proj.weight", Role.FFN, 3),
    ("model.layers.3.mlp.gate_up_proj.weight", Role.FFN, 3),
    ("model.layers.0.post_attention_layernorm.weight", Role.NORM, 0),
    ("model.layers.0.self_attn.q_norm.weight", Role.NORM, 0),
    ("model.norm.weight", Role.NORM, None),
    ("lm_head.weight", Role.OTHER, None),
    ("transformer.wte.weight", Role.EMBEDDING, None),
    ("transformer.h.7.attn.c_attn.weight", Role.ATTENTION, 7),
    ("transformer.h.7.attn.c_proj.weight", Role.ATTENTION, 7),
    ("transformer.h.7.mlp.c_fc.weight", Role.FFN, 7),
    ("transformer.h.7.ln_2.weight", Role.NORM, 7),
    ("transformer.h.2.self_attention.query_key_value.weight", Role.ATTENTION, 2),  # Falcon
    ("transformer.h.2.mlp.fc_in.weight", Role.FFN, 2),  # GPT-J
    ("gpt_neox.layers.4.attention.query_key_value.weight", Role.ATTENTION, 4),
    ("gpt_neox.layers.4.mlp.dense_4h_to_h.weight", Role.FFN, 4),
    ("gpt_neox.embed_in.weight", Role.EMBEDDING, None),
    ("encoder.layer.5.attention.self.query.weight", Role.ATTENTION, 5),
    ("encoder.layer.5.attention.output.dense.weight", Role.ATTENTION, 5),
    ("encoder.layer.5.intermediate.dense.weight", Role.FFN, 5),
    ("encoder.layer.5.output.dense.weight", Role.FFN, 5),
    ("bert.encoder.layer.5.output.LayerNorm.weight", Role.NORM, 5),
    ("bert.embeddings.word_embeddings.weight", Role.EMBEDDING, None),
    ("shared.weight", Role.EMBEDDING, None),
    ("encoder.block.1.layer.0.SelfAttention.k.weight", Role.ATTENTION, 1),
    ("decoder.block.2.layer.1.EncDecAttention.o.weight", Role.ATTENTION, 2),
    ("encoder.block.1.layer.1.DenseReluDense.wo.weight", Role.FFN, 1),
    ("pooler.dense.weight", Role.OTHER, None),
]


@pytest.mark.parametrize(("name", "expected_role", "expected_block"), CASES)
def test_role_and_block(name, expected_role, expected_block):
    assert role(name) is expected_role
    assert block_index(name) == expected_block


def paper_role(name: str) -> str:
    """The reference code's substring rules, in its order."""
    lower = name.lower()
    if "attention" in lower or "attn" in lower:
        return "attention"
    if "ffn" in lower or "mlp" in lower:
        return "ffn"
    if "embed" in lower:
        return "embedding"
    return "other"


def matrices(scheme: str) -> list[str]:
    return [n for n, s in tensor_shapes(ModelSpec(scheme=scheme, layers=3)) if len(s) == 2]


@pytest.mark.parametrize("scheme", ["llama", "neox"])
def test_agrees_with_paper_on_2d_llama_style_names(scheme):
    """On every 2-D tensor of Llama-style names the role module and the paper's rules agree."""
    for name in matrices(scheme):
        assert role(name).value == paper_role(name), name


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_block_matrix_has_a_role(scheme):
    """Where the paper's substrings fail (GPT-2 ``wte``, BERT, T5), every block matrix still gets one."""
    for name in matrices(scheme):
        if block_index(name) is not None:
            assert role(name) in (Role.ATTENTION, Role.FFN), name
