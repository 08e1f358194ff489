"""Tensor roles and block indices across naming schemes, and agreement with the paper's rules."""

from __future__ import annotations

import pytest

from tensorguard.architectures import (
    NORM_PLUS_ONE,
    REGISTRY,
    QkvOrder,
    Role,
    Scheme,
    Site,
    Slot,
    Space,
    Weight,
    block_index,
    is_vocab_matrix,
    lookup,
    mlp_blocks,
    role,
    vocab_matrix,
)
from tensorguard.architectures.registry import Registry
from tensorguard.synthetic import ModelSpec, tensor_shapes

SCHEMES = sorted(REGISTRY.schemes)

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
    ("tok_embeddings.weight", Role.EMBEDDING, None),  # Meta's own Llama layout
    ("layers.3.feed_forward.w2.weight", Role.FFN, 3),
    ("model.layers.2.block_sparse_moe.experts.7.w1.weight", Role.FFN, 2),  # no scheme: keywords
    ("language_model.model.layers.4.mlp.up_proj.weight", Role.FFN, 4),  # a wrapped model
    ("h.5.attn.c_attn.weight", Role.ATTENTION, 5),  # bare GPT-2 checkpoints drop "transformer."
    ("gpt_neox.layers.1.attention.dense.weight", Role.ATTENTION, 1),
    ("embed_out.weight", Role.EMBEDDING, None),  # the paper's rule sees "embed" in it
    ("model.layers.6.mlp.c_fc.weight", Role.FFN, 6),  # StarCoder2
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


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_block_matrix_has_a_role(scheme):
    """Where the paper's substrings fail (GPT-2 ``wte``, BERT, T5), every block matrix still gets one."""
    for name in matrices(scheme):
        if block_index(name) is not None:
            assert role(name) in (Role.ATTENTION, Role.FFN), name


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_generated_tensor_is_found_in_its_own_scheme(scheme):
    """The generator and the lookup read the same records: every name maps back to its weight."""
    spec = ModelSpec(scheme=scheme, layers=3, kv_heads=2)
    for name, shape in tensor_shapes(spec):
        located = lookup(name)
        assert located is not None, name
        assert len(located.weight.axes) == len(shape)
        assert located.block == block_index(name)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_anatomy_is_read_off_the_records(scheme):
    """Every scheme has a vocabulary matrix and an MLP whose neuron axis is found, per block."""
    spec = ModelSpec(scheme=scheme, layers=3, hidden=32, intermediate=80, heads=4)
    shapes = {n: s for n, s in tensor_shapes(spec) if len(s) == 2}
    vocab = vocab_matrix(shapes)
    assert vocab is not None and shapes[vocab] == (spec.vocab, spec.hidden) and is_vocab_matrix(vocab)
    blocks = mlp_blocks(shapes)
    assert len(blocks) == 3 and all(b.neurons == 80 for b in blocks)
    for b in blocks:
        for m in (b.first, b.second):
            rows = m.rows[1] - m.rows[0] if m.rows else shapes[m.name][1 if m.transpose else 0]
            assert rows == 80, m


def test_fused_gate_up_is_split_in_halves():
    shapes = {n: s for n, s in tensor_shapes(ModelSpec(scheme="phi3", layers=1, intermediate=48))
              if len(s) == 2}
    (block,) = mlp_blocks(shapes)
    assert block.scheme == "gate/up" and block.first.rows == (0, 48) and block.second.rows == (48, 96)


def test_a_scheme_that_contradicts_another_is_refused():
    """Two schemes may share a name only if they agree on what it is."""
    registry = Registry()
    axes = (Space.VOCAB, Space.RESIDUAL)
    registry.register(Scheme("a", "", before=(Weight("x.weight", Slot.EMBED, axes),), blocks=()))
    registry.register(Scheme("b", "", before=(Weight("x.weight", Slot.EMBED, axes),), blocks=()))
    with pytest.raises(ValueError, match="disagree"):
        registry.register(Scheme("c", "", before=(Weight("x.weight", Slot.LM_HEAD, axes),), blocks=()))
    with pytest.raises(ValueError, match="twice"):
        registry.register(Scheme("a", "", before=(), blocks=()))


def test_conv1d_storage_is_recorded_as_axes():
    """GPT-2 stores (in, out): the residual axis comes first in c_fc and last in mlp.c_proj."""
    assert lookup("transformer.h.0.mlp.c_fc.weight").weight.axes == (Space.RESIDUAL, Space.NEURON)
    assert lookup("model.layers.0.mlp.down_proj.weight").weight.axes == (Space.RESIDUAL, Space.NEURON)
    assert lookup("model.layers.0.mlp.up_proj.weight").weight.axes == (Space.NEURON, Space.RESIDUAL)


def test_where_each_norm_acts_is_data():
    """Llama's post_attention_layernorm feeds the MLP; in a block that also holds Gemma 2/3's
    pre_feedforward_layernorm it scales the attention output instead."""
    def weight(name: str) -> Weight:
        located = lookup(name)
        assert located is not None, name
        return located.weight

    assert weight("model.layers.0.input_layernorm.weight").feeds == (Site.ATTENTION_IN,)
    post = weight("model.layers.0.post_attention_layernorm.weight")
    assert post.feeds == (Site.MLP_IN,)
    assert post.feeds_instead == ("model.layers.{block}.pre_feedforward_layernorm.weight",
                                  (Site.ATTENTION_OUT,))
    assert weight("model.layers.0.pre_feedforward_layernorm.weight").feeds == (Site.MLP_IN,)
    assert weight("model.layers.0.post_feedforward_layernorm.weight").feeds == (Site.MLP_OUT,)
    assert weight("transformer.h.0.ln_2.weight").feeds == (Site.MLP_IN,)
    assert weight("transformer.h.0.ln_attn.weight").feeds == (Site.ATTENTION_IN,)  # Falcon-40B
    assert {"gemma", "gemma2", "gemma3"} <= NORM_PLUS_ONE


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fused_qkv_weights_say_their_order_and_decoders_their_input_norm(scheme):
    s = REGISTRY.schemes[scheme]
    for w in s.weights():
        if w.slot is Slot.QKV and len(w.axes) == 2:
            assert w.qkv_order is not None, w.name
    if scheme not in ("bert", "t5"):  # the encoders, which the weight signature refuses
        assert any(Site.ATTENTION_IN in w.feeds for w in s.blocks), scheme


def test_fused_orders():
    orders = {name: lookup(name).weight.qkv_order for name in (  # type: ignore[union-attr]
        "model.layers.0.self_attn.qkv_proj.weight", "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.self_attention.query_key_value.weight",
        "gpt_neox.layers.0.attention.query_key_value.weight")}
    assert list(orders.values()) == [QkvOrder.CONCAT, QkvOrder.CONCAT, QkvOrder.GROUPED, QkvOrder.GROUPED]


def test_schemes_sharing_a_name_must_agree_on_where_a_norm_acts():
    registry = Registry()
    norm = Weight("n.weight", Slot.NORM, (Space.RESIDUAL,), feeds=(Site.ATTENTION_IN,))
    registry.register(Scheme("a", "", before=(norm,), blocks=()))
    with pytest.raises(ValueError, match="disagree"):
        registry.register(Scheme("b", "", before=(Weight("n.weight", Slot.NORM, (Space.RESIDUAL,),
                                                         feeds=(Site.MLP_IN,)),), blocks=()))
