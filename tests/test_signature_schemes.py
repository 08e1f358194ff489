"""The signature across the registry's schemes: one model stored in another scheme's layout
(fused q/k/v and gate/up, Conv1D orientation, per-group fused rows) has the same signature;
Gemma's ``1 + w`` norms, parallel blocks and the Gemma 2 sandwich norms are read as the registry
says; GGUF files; what is refused, and what is left out without a head count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tensorguard.architectures import REGISTRY
from tensorguard.errors import TensorguardError
from tensorguard.signatures import KINDS, REFUSED, compute_signature, similarity
from tensorguard.synthetic import ModelSpec, make_weights, save_model

SPEC = ModelSpec(scheme="llama", hidden=32, layers=2, intermediate=64, vocab=96, heads=4, kv_heads=2)
HD, KV, GROUP = SPEC.head_dim, 2, 2
W = dict[str, torch.Tensor]


def _save(path: Path, weights: W, config: dict[str, object] | None = None) -> Path:
    save_model(weights, path)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def _heads(**extra: object) -> dict[str, object]:
    return {"num_attention_heads": SPEC.heads, **extra}


@pytest.fixture(scope="module")
def llama() -> W:
    w = make_weights(SPEC, 0)
    for i in range(SPEC.layers):  # norms far from one, so folding them matters
        for norm in ("input_layernorm", "post_attention_layernorm"):
            w[f"model.layers.{i}.{norm}.weight"] = torch.exp(torch.randn(SPEC.hidden) * 0.7)
    return w


@pytest.fixture(scope="module")
def llama_sig(llama, tmp_path_factory):
    return compute_signature(_save(tmp_path_factory.mktemp("llama"), llama, _heads()))


def _block(w: W, i: int, x: str) -> torch.Tensor:
    return w[f"model.layers.{i}.{x}.weight"]


def _same(a, b, kinds=KINDS) -> None:
    s = similarity(a, b)
    assert s.embed is not None and s.embed > 0.999
    assert set(kinds) <= set(s.kinds) and min(s.kinds[k] for k in kinds) > 0.999, s.kinds


def test_fused_phi3_layout_is_the_same_model(llama, llama_sig, tmp_path):
    w = {n: t for n, t in llama.items() if not any(x in n for x in ("q_proj", "k_proj", "v_proj",
                                                                     "gate_proj", "up_proj"))}
    for i in range(SPEC.layers):
        w[f"model.layers.{i}.self_attn.qkv_proj.weight"] = torch.cat(
            [_block(llama, i, f"self_attn.{x}_proj") for x in "qkv"])
        w[f"model.layers.{i}.mlp.gate_up_proj.weight"] = torch.cat(
            [_block(llama, i, "mlp.gate_proj"), _block(llama, i, "mlp.up_proj")])
    _same(llama_sig, compute_signature(_save(tmp_path / "phi3", w, _heads())))


def _falcon(llama: W, *, kv: int) -> W:
    """Falcon names: fused (kv, group + 2, head_dim) rows, one norm for the parallel block."""
    group = SPEC.heads // kv
    w = {"transformer.word_embeddings.weight": llama["model.embed_tokens.weight"],
         "transformer.ln_f.weight": llama["model.norm.weight"], "lm_head.weight": llama["lm_head.weight"]}
    for i in range(SPEC.layers):
        q, k, v = (_block(llama, i, f"self_attn.{x}_proj").view(-1, HD, SPEC.hidden) for x in "qkv")
        if kv == SPEC.heads:  # GPT-NeoX: no grouping, so every head keeps its own key and value
            k, v = (t.repeat_interleave(SPEC.heads // KV, 0) for t in (k, v))
        rows = [torch.cat([q[g * group:(g + 1) * group], k[g:g + 1], v[g:g + 1]]) for g in range(kv)]
        p = f"transformer.h.{i}."
        w[p + "input_layernorm.weight"] = _block(llama, i, "input_layernorm")
        w[p + "self_attention.query_key_value.weight"] = torch.cat(rows).reshape(-1, SPEC.hidden)
        w[p + "self_attention.dense.weight"] = _block(llama, i, "self_attn.o_proj")
        w[p + "mlp.dense_h_to_4h.weight"] = _block(llama, i, "mlp.up_proj")
        w[p + "mlp.dense_4h_to_h.weight"] = _block(llama, i, "mlp.down_proj")
    return w


def _parallel(llama: W) -> W:
    """The Llama model with its MLP reading the attention's norm (what a parallel block does)."""
    w = dict(llama)
    for i in range(SPEC.layers):
        w[f"model.layers.{i}.post_attention_layernorm.weight"] = _block(llama, i, "input_layernorm").clone()
    return w


def test_falcon_grouped_rows_and_its_parallel_norm(llama, tmp_path):
    reference = compute_signature(_save(tmp_path / "llama", _parallel(llama), _heads()))
    falcon = compute_signature(_save(tmp_path / "falcon", _falcon(llama, kv=KV), _heads()))
    _same(reference, falcon, ("qk", "ov", "mlp"))


def test_neox_rows_are_per_head(llama, tmp_path):
    """GPT-NeoX's (heads, 3, head_dim) rows: the grouped order with as many KV heads as heads."""
    expanded = dict(_parallel(llama))
    for i in range(SPEC.layers):
        for x in "kv":
            name = f"model.layers.{i}.self_attn.{x}_proj.weight"
            expanded[name] = llama[name].view(KV, HD, -1).repeat_interleave(GROUP, 0).reshape(-1, SPEC.hidden)
    reference = compute_signature(_save(tmp_path / "llama", expanded, _heads()))
    falcon = _falcon(llama, kv=SPEC.heads)
    neox = {"gpt_neox.embed_in.weight": falcon.pop("transformer.word_embeddings.weight"),
            "embed_out.weight": falcon.pop("lm_head.weight")}
    for name, t in falcon.items():
        neox[name.replace("transformer.h.", "gpt_neox.layers.").replace("self_attention.", "attention.")
             .replace("transformer.ln_f", "gpt_neox.final_layer_norm")] = t
    for i in range(SPEC.layers):
        norm = _block(llama, i, "input_layernorm").clone()
        neox[f"gpt_neox.layers.{i}.post_attention_layernorm.weight"] = norm
    _same(reference, compute_signature(_save(tmp_path / "neox", neox, _heads())), ("qk", "ov", "mlp"))


def test_gpt2_conv1d_orientation(tmp_path):
    spec = ModelSpec(scheme="llama", hidden=32, layers=2, intermediate=64, vocab=96, heads=4)
    llama = make_weights(spec, 1)
    gpt2 = {"transformer.wte.weight": llama["model.embed_tokens.weight"]}
    for i in range(spec.layers):
        p = f"transformer.h.{i}."
        gpt2[p + "ln_1.weight"] = _block(llama, i, "input_layernorm")
        gpt2[p + "ln_2.weight"] = _block(llama, i, "post_attention_layernorm")
        gpt2[p + "attn.c_attn.weight"] = torch.cat([_block(llama, i, f"self_attn.{x}_proj") for x in "qkv"]).T
        gpt2[p + "attn.c_proj.weight"] = _block(llama, i, "self_attn.o_proj").T
        gpt2[p + "mlp.c_fc.weight"] = _block(llama, i, "mlp.up_proj").T
        gpt2[p + "mlp.c_proj.weight"] = _block(llama, i, "mlp.down_proj").T
    reference = compute_signature(_save(tmp_path / "llama", llama))
    _same(reference, compute_signature(_save(tmp_path / "gpt2", gpt2)), ("qk", "ov", "mlp"))


def test_gemma_norms_scale_by_one_plus_weight(llama, tmp_path):
    """Rescaling a Gemma norm and the matrices after it preserves the function only if the norm
    is ``1 + w``: the signature sees through it exactly when config.json says gemma."""
    gemma = {n: t - 1.0 if n.endswith("layernorm.weight") else t for n, t in llama.items()}
    s = torch.exp(torch.randn(SPEC.hidden, generator=torch.Generator().manual_seed(3)))
    rescaled = dict(gemma)
    for i in range(SPEC.layers):
        norm = _block(gemma, i, "input_layernorm")
        rescaled[f"model.layers.{i}.input_layernorm.weight"] = (norm + 1) * s - 1
        for x in "qkv":
            name = f"model.layers.{i}.self_attn.{x}_proj.weight"
            rescaled[name] = gemma[name] / s
    config = _heads(model_type="gemma")
    base = compute_signature(_save(tmp_path / "gemma", gemma, config))
    _same(base, compute_signature(_save(tmp_path / "rescaled", rescaled, config)))
    read_as_llama = compute_signature(_save(tmp_path / "llama-read", rescaled, _heads()))
    assert similarity(base, read_as_llama).kinds["qk"] < 0.99


def test_gemma2_post_attention_norm_scales_the_attention_output(llama, tmp_path):
    sandwich = dict(llama)
    for i in range(SPEC.layers):
        p = f"model.layers.{i}."
        sandwich[p + "pre_feedforward_layernorm.weight"] = _block(llama, i, "post_attention_layernorm")
        sandwich[p + "post_attention_layernorm.weight"] = torch.exp(
            torch.randn(SPEC.hidden, generator=torch.Generator().manual_seed(10 + i)))
    folded = dict(sandwich)
    for i in range(SPEC.layers):
        g = folded.pop(f"model.layers.{i}.post_attention_layernorm.weight")
        folded[f"model.layers.{i}.self_attn.o_proj.weight"] = g[:, None] * _block(llama, i,
                                                                                   "self_attn.o_proj")
    a = compute_signature(_save(tmp_path / "sandwich", sandwich, _heads()))
    _same(a, compute_signature(_save(tmp_path / "folded", folded, _heads())))


def test_without_a_head_count_grouped_attention_is_left_out(llama, llama_sig, tmp_path):
    sig = compute_signature(_save(tmp_path / "bare", llama))
    qk, ov = KINDS.index("qk"), KINDS.index("ov")
    assert not np.any(sig.blocks[:, [qk, ov]])
    s = similarity(llama_sig, sig)
    assert set(s.kinds) == {"mlp", "gate"} and s.score > 0.999


@pytest.mark.parametrize("scheme", sorted(set(REGISTRY.schemes) - set(REFUSED)))
def test_every_supported_scheme_has_a_signature(scheme, tmp_path):
    spec = ModelSpec(scheme=scheme, hidden=32, layers=2, intermediate=64, vocab=96, heads=4)
    sig = compute_signature(_save(tmp_path / scheme, make_weights(spec, 0), _heads()))
    assert len(sig.block_index) == spec.layers
    assert all(np.any(sig.blocks[:, KINDS.index(k)]) for k in ("qk", "ov", "mlp"))


@pytest.mark.parametrize("scheme", sorted(REFUSED))
def test_refused_schemes_are_named(scheme, tmp_path):
    spec = ModelSpec(scheme=scheme, hidden=32, layers=1, intermediate=64, vocab=96, heads=4)
    with pytest.raises(TensorguardError, match=f"does not support the {scheme} scheme"):
        compute_signature(_save(tmp_path / scheme, make_weights(spec, 0)))


def test_a_gguf_file_has_the_signature_of_its_safetensors(llama, llama_sig, tmp_path):
    from tensorguard.testing.gguf_write import save_gguf

    gguf = save_gguf(llama, tmp_path / "m.gguf", arch="llama", heads=SPEC.heads, kv_heads=KV)
    sig = compute_signature(gguf)  # heads from the GGUF metadata; rows un-permuted by the reader
    assert sig.tokens == llama_sig.tokens  # no vocabulary in either file: row keys
    _same(llama_sig, sig)


def test_gguf_vocabulary_is_read_from_the_metadata(tmp_path):
    from gguf import GGUFWriter, TokenType

    from tensorguard.signatures.tokens import _gguf_vocabulary

    path = tmp_path / "v.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_uint32("x.some.number", 7)
    writer.add_array("x.some.strings", ["a", "b"])
    writer.add_token_list(["<s>", "hello", "Ġworld", "<0x0A>"])
    writer.add_token_types([TokenType.CONTROL, TokenType.NORMAL, TokenType.NORMAL, TokenType.BYTE])
    writer.add_token_merges(["h e", "l l"])
    writer.add_tensor("t", np.zeros((2, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert _gguf_vocabulary(path, 5) == [None, "hello", "Ġworld", "<0x0A>", None]
