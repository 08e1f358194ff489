"""GGUF models: tiny real files written with gguf.GGUFWriter from synthetic models, read back under
Hugging Face names with llama.cpp's conversions undone, through the library and the CLI."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFWriter

from tensorguard.errors import TensorguardError
from tensorguard.loading import Layout, WeightFormat, open_model
from tensorguard.loading.gguf import FLOAT_TYPES, dequantizable
from tensorguard.loading.gguf_arch import ARCHITECTURES
from tensorguard.synthetic import ModelSpec, make_weights, save_model
from tensorguard.testing.gguf_write import quantize_q4_k, requantize, save_gguf

Q = GGMLQuantizationType
SPEC = ModelSpec(scheme="llama", hidden=64, layers=2, intermediate=128, vocab=96, heads=4, kv_heads=2)
HEADS, KV = 4, 2
Q_PROJ, K_PROJ = "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return make_weights(SPEC, seed=3)


def llama_gguf(path: Path, weights: dict[str, torch.Tensor], qtype: GGMLQuantizationType = Q.F32,
               **kw: object) -> Path:
    return save_gguf(weights, path, arch="llama", heads=HEADS, kv_heads=KV, qtype=qtype, **kw)


# --- plain re-statements of llama.cpp's converter (convert_hf_to_gguf.py) -------------------------

def converter_permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def stored(path: Path, name: str) -> torch.Tensor:
    """A tensor as the GGUF file stores it, dequantized by gguf itself."""
    t = next(t for t in GGUFReader(path).tensors if t.name == name)
    return torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type)))


# --- names, conversions and values ---------------------------------------------------------------

def test_llama_f32_reads_back_exactly_under_hf_names(tmp_path, weights):
    path = llama_gguf(tmp_path / "tiny.gguf", weights)
    with open_model(path) as src:
        assert (src.layout, src.format, src.name) == (Layout.GGUF, WeightFormat.GGUF, "tiny")
        assert list(src.tensors) == sorted(weights)
        assert all(torch.equal(src.read(n), w) for n, w in weights.items())
        assert src.total_params == sum(w.numel() for w in weights.values())
    # the file really holds llama.cpp's layout: GGUF names, q/k rows permuted per (KV) head
    assert torch.equal(stored(path, "blk.1.attn_q.weight"), converter_permute(weights[Q_PROJ], HEADS))
    assert torch.equal(stored(path, "blk.1.attn_k.weight"), converter_permute(weights[K_PROJ], KV))
    assert torch.equal(unpermute(converter_permute(weights[K_PROJ], KV), KV), weights[K_PROJ])


@pytest.mark.parametrize("qtype", [Q.F16, Q.BF16], ids=lambda t: t.name)
def test_float_types_unpermute_to_the_source_exactly(tmp_path, weights, qtype):
    path = llama_gguf(tmp_path / "m.gguf", weights, qtype)
    dtype = getattr(torch, FLOAT_TYPES[qtype][1])
    with open_model(path) as src:
        for name in (Q_PROJ, K_PROJ, "model.layers.0.mlp.down_proj.weight"):
            assert src.info(name).dtype == qtype.name and src.info(name).quant is None
            assert torch.equal(src.read(name), weights[name].to(dtype))
            assert torch.equal(src.read_rows(name, 5, 27), weights[name].to(dtype)[5:27])


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.MXFP4], ids=lambda t: t.name)
def test_quantized_reads_equal_gguf_dequantize(tmp_path, weights, qtype):
    path = llama_gguf(tmp_path / "m.gguf", weights, qtype)
    with open_model(path) as src:
        down = "model.layers.0.mlp.down_proj.weight"
        assert torch.equal(src.read(down), stored(path, "blk.0.ffn_down.weight"))
        q = src.read(Q_PROJ)
        assert q.dtype == torch.float32
        assert torch.equal(q, unpermute(stored(path, "blk.1.attn_q.weight"), HEADS))
        assert torch.equal(src.read_rows(Q_PROJ, 7, 41), q[7:41])
        info = src.info(Q_PROJ)
        block, size = GGML_QUANT_SIZES[qtype]
        assert (info.dtype, info.quant.scheme) == (qtype.name, qtype.name)
        assert (info.quant.bits_per_weight, info.quant.group_size) == (size * 8 / block, block)
        assert (q - weights[Q_PROJ]).norm() < 0.2 * weights[Q_PROJ].norm()  # the source, quantized


DEQUANTIZABLE = [t for t in Q if t not in FLOAT_TYPES and dequantizable(t)]


def test_every_type_gguf_quants_dequantizes_is_read():
    expected = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL",
                "IQ4_XS", "TQ1_0", "TQ2_0"}
    assert expected <= {t.name for t in DEQUANTIZABLE}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # arbitrary bytes: some scales are inf or nan
@pytest.mark.parametrize("qtype", DEQUANTIZABLE, ids=lambda t: t.name)
def test_raw_blocks_of_every_dequantizable_type(tmp_path, qtype):
    """Arbitrary blocks of each type, stored as-is: tensorguard's reads equal gguf's dequantize."""
    block, size = GGML_QUANT_SIZES[qtype]
    raw = np.random.default_rng(0).integers(0, 256, (6, 512 // block * size), dtype=np.uint8)
    writer = GGUFWriter(tmp_path / "raw.gguf", "llama")
    writer.add_block_count(1)
    writer.add_tensor("blk.0.ffn_down.weight", raw, raw_dtype=qtype)
    write(writer)
    expected = torch.from_numpy(gguf.quants.dequantize(raw, qtype))
    with open_model(tmp_path / "raw.gguf") as src:
        name = "model.layers.0.mlp.down_proj.weight"
        torch.testing.assert_close(src.read(name), expected, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(src.read_rows(name, 2, 5), expected[2:5], rtol=0, atol=0,
                                   equal_nan=True)


def test_q4_k_quantizer_blocks_decode_to_its_formula():
    """The benchmark's simple Q4_K blocks: gguf decodes them to d*sc*q - dmin*m, near the input."""
    x = np.random.default_rng(1).normal(0, 0.02, (3, 512)).astype(np.float32)
    blocks = quantize_q4_k(x).reshape(-1, 144)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    s = blocks[:, 4:16]
    sc = np.concatenate([s[:, :4] & 63, (s[:, 8:] & 15) | ((s[:, :4] >> 6) << 4)], axis=1)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    codes = blocks[:, 16:].reshape(-1, 4, 1, 32)
    q = np.concatenate([codes & 15, codes >> 4], axis=2).reshape(-1, 8, 32)
    restated = (d[:, :, None] * sc[:, :, None] * q - dmin[:, :, None] * m[:, :, None]).reshape(3, 512)
    decoded = gguf.quants.dequantize(quantize_q4_k(x), Q.Q4_K)
    np.testing.assert_allclose(decoded, restated, rtol=1e-6, atol=1e-9)
    assert np.abs(decoded - x).max() < 0.2 * np.abs(x).max()


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma", "gemma2", "gemma3"])
def test_llama_family_architectures_map_back(tmp_path, arch):
    weights = make_weights(ModelSpec(hidden=64, layers=2, intermediate=128, vocab=96, heads=4,
                                     kv_heads=2, tied=True), 4)
    spec = ARCHITECTURES[arch]
    if arch in ("qwen3", "gemma3"):  # per-head q/k norms
        weights.update({f"model.layers.{i}.self_attn.{x}_norm.weight": 1 + 0.05 * torch.randn(16)
                        for i in range(2) for x in "qk"})
    if arch in ("gemma2", "gemma3"):  # sandwich norms around the MLP
        weights.update({f"model.layers.{i}.{x}_feedforward_layernorm.weight": 1 + torch.rand(64)
                        for i in range(2) for x in ("pre", "post")})
    path = save_gguf(weights, tmp_path / f"{arch}.gguf", arch=arch, heads=4, kv_heads=2)
    with open_model(path) as src:
        assert set(src.tensors) == set(weights)
        assert src.claims.architecture == arch and src.claims.tied_embeddings is True
        for name, w in weights.items():
            if spec.norm_offset and name.endswith("norm.weight"):  # stored + 1: float32 rounding
                assert torch.equal(stored(path, _gguf_name(path, arch, name)), w + 1)
                torch.testing.assert_close(src.read(name), w, rtol=0, atol=2e-7)
            else:
                assert torch.equal(src.read(name), w), name


def _gguf_name(path: Path, arch: str, hf: str) -> str:
    names = gguf.TensorNameMap({v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch], 2)
    return names.get_name(hf, try_suffixes=(".weight", ".bias"))


def test_phi3_fused_matrices_map_back(tmp_path, weights):
    fused = {}
    for name, w in weights.items():
        if ".q_proj." in name:
            p = name.split("q_proj")[0]
            fused[p + "qkv_proj.weight"] = torch.cat([w, weights[p + "k_proj.weight"],
                                                      weights[p + "v_proj.weight"]])
        elif ".gate_proj." in name:
            p = name.split("gate_proj")[0]
            fused[p + "gate_up_proj.weight"] = torch.cat([w, weights[p + "up_proj.weight"]])
        elif not any(f".{x}_proj." in name for x in "kv") and ".up_proj." not in name:
            fused[name] = w
    with open_model(save_gguf(fused, tmp_path / "phi.gguf", arch="phi3", heads=4, kv_heads=2)) as src:
        assert set(src.tensors) == set(fused)
        assert all(torch.equal(src.read(n), w) for n, w in fused.items())


def test_gpt2_conv1d_transposition_is_undone(tmp_path):
    weights = make_weights(ModelSpec(scheme="gpt2", hidden=64, layers=2, intermediate=128, vocab=96), 5)
    path = save_gguf(weights, tmp_path / "gpt2.gguf", arch="gpt2", heads=4)
    c_fc = "transformer.h.1.mlp.c_fc.weight"
    assert torch.equal(stored(path, "blk.1.ffn_up.weight"), weights[c_fc].T)
    with open_model(path) as src:
        assert set(src.tensors) == set(weights)
        assert all(torch.equal(src.read(n), w) for n, w in weights.items())
        assert src.info(c_fc).shape == (64, 128)
        assert torch.equal(src.read_rows(c_fc, 10, 20), weights[c_fc][10:20])


def test_gpt_neox_fused_qkv_rows_are_regrouped(tmp_path):
    weights = make_weights(ModelSpec(scheme="neox", hidden=64, layers=2, intermediate=128, vocab=96), 6)
    path = save_gguf(weights, tmp_path / "neox.gguf", arch="gptneox", heads=4)
    qkv = "gpt_neox.layers.0.attention.query_key_value.weight"
    per_head = weights[qkv].reshape(4, 3, 16, 64)  # Hugging Face: (heads, q/k/v, head_dim) rows
    assert torch.equal(stored(path, "blk.0.attn_qkv.weight"),
                       torch.cat([per_head[:, i].reshape(64, 64) for i in range(3)]))
    with open_model(path) as src:
        assert set(src.tensors) == set(weights)
        assert all(torch.equal(src.read(n), w) for n, w in weights.items())
        assert torch.equal(src.read_rows(qkv, 7, 150), weights[qkv][7:150])


@pytest.mark.parametrize(("kv", "norms"), [(1, ("input_layernorm",)), (2, ("ln_attn", "ln_mlp"))])
def test_falcon_grouped_qkv_rows_are_regrouped(tmp_path, kv, norms):
    gen = torch.Generator().manual_seed(7)
    heads, d, hidden = 4, 16, 64
    weights = {"transformer.word_embeddings.weight": torch.randn(96, hidden, generator=gen),
               "transformer.ln_f.weight": torch.rand(hidden, generator=gen),
               "lm_head.weight": torch.randn(96, hidden, generator=gen)}
    for i in range(2):
        p = f"transformer.h.{i}."
        weights.update({p + n + ".weight": torch.rand(hidden, generator=gen) for n in norms})
        weights.update({
            p + "self_attention.query_key_value.weight": torch.randn((heads + 2 * kv) * d, hidden,
                                                                     generator=gen),
            p + "self_attention.dense.weight": torch.randn(hidden, hidden, generator=gen),
            p + "mlp.dense_h_to_4h.weight": torch.randn(4 * hidden, hidden, generator=gen),
            p + "mlp.dense_4h_to_h.weight": torch.randn(hidden, 4 * hidden, generator=gen)})
    path = save_gguf(weights, tmp_path / "falcon.gguf", arch="falcon", heads=heads, kv_heads=kv)
    qkv = weights["transformer.h.0.self_attention.query_key_value.weight"]
    groups = qkv.reshape(kv, heads // kv + 2, d, hidden)  # per KV group: its q heads, k, v
    expected = torch.cat([groups[:, :-2].reshape(-1, hidden), groups[:, -2].reshape(-1, hidden),
                          groups[:, -1].reshape(-1, hidden)])
    assert torch.equal(stored(path, "blk.0.attn_qkv.weight"), expected)
    with open_model(path) as src:
        assert set(src.tensors) == set(weights)
        assert all(torch.equal(src.read(n), w) for n, w in weights.items())


def test_unknown_architecture_keeps_gguf_names(tmp_path):
    writer = GGUFWriter(tmp_path / "m.gguf", "mamba")
    writer.add_tensor("token_embd.weight", np.ones((8, 32), np.float32))
    write(writer)
    with open_model(tmp_path / "m.gguf") as src:
        assert list(src.tensors) == ["token_embd.weight"]
        assert src.claims.architecture == "mamba" and src.claims.hf_names is False


# --- metadata claims ------------------------------------------------------------------------------

def test_claims_come_from_the_metadata(tmp_path, weights):
    meta = {"general.name": "Tiny Llama", "general.base_model.count": 1,
            "general.base_model.0.name": "Llama 3.2 1B", "general.base_model.0.organization": "Meta",
            "general.base_model.0.repo_url": "https://huggingface.co/meta-llama/Llama-3.2-1B",
            "llama.embedding_length": 64, "llama.vocab_size": 96}
    path = llama_gguf(tmp_path / "m.gguf", weights, Q.Q8_0, metadata=meta)
    claims = open_model(path).claims
    assert (claims.architecture, claims.name, claims.file_type) == ("llama", "Tiny Llama", "MOSTLY_Q8_0")
    assert (claims.block_count, claims.head_count, claims.head_count_kv) == (2, 4, 2)
    assert (claims.embedding_length, claims.vocab_size) == (64, 96)
    assert claims.tied_embeddings is False and claims.hf_names is True
    (base,) = claims.base_models
    assert (base.name, base.organization, base.version) == ("Llama 3.2 1B", "Meta", None)
    assert base.repo_url == "https://huggingface.co/meta-llama/Llama-3.2-1B"


def test_tied_embeddings_invent_no_output_tensor(tmp_path):
    weights = make_weights(ModelSpec(hidden=64, layers=1, intermediate=128, vocab=96, tied=True), 0)
    with open_model(save_gguf(weights, tmp_path / "m.gguf", arch="llama", heads=4)) as src:
        assert "lm_head.weight" not in src.tensors and src.claims.tied_embeddings is True


# --- layouts ---------------------------------------------------------------------------------------

def test_split_set_from_any_part_or_its_directory(tmp_path, weights):
    first = llama_gguf(tmp_path / "split" / "tiny.gguf", weights, split_max_tensors=8)
    assert first.name == "tiny-00001-of-00003.gguf"
    for entry in (first, tmp_path / "split" / "tiny-00003-of-00003.gguf", tmp_path / "split"):
        with open_model(entry) as src:
            assert (src.layout, len(src.shards), src.name) == (Layout.GGUF_SPLIT, 3, "tiny")
            assert all(torch.equal(src.read(n), w) for n, w in weights.items())


def test_directory_with_one_gguf_and_a_gguf_without_the_suffix(tmp_path, weights):
    path = llama_gguf(tmp_path / "Tiny-GGUF" / "tiny.Q8_0.gguf", weights, Q.Q8_0)
    assert open_model(tmp_path / "Tiny-GGUF").name == "Tiny-GGUF"
    renamed = path.rename(tmp_path / "tiny.bin")
    assert open_model(renamed).format is WeightFormat.GGUF
    llama_gguf(tmp_path / "Tiny-GGUF" / "a.gguf", weights)
    llama_gguf(tmp_path / "Tiny-GGUF" / "b.gguf", weights)
    with pytest.raises(TensorguardError, match=r"several \.gguf files"):
        open_model(tmp_path / "Tiny-GGUF")


# --- bad input -------------------------------------------------------------------------------------

def test_split_set_with_a_part_missing(tmp_path, weights):
    first = llama_gguf(tmp_path / "tiny.gguf", weights, split_max_tensors=8)
    (tmp_path / "tiny-00002-of-00003.gguf").unlink()
    with pytest.raises(TensorguardError, match=r"split GGUF set 'tiny' is incomplete: part\(s\) 2 of 3"):
        open_model(first)


def test_truncated_header_and_truncated_data(tmp_path, weights):
    path = llama_gguf(tmp_path / "m.gguf", weights)
    data = path.read_bytes()
    path.write_bytes(data[:200])
    with pytest.raises(TensorguardError, match="truncated GGUF file: the header runs past the end"):
        open_model(path)
    path.write_bytes(data[:-100])
    with pytest.raises(TensorguardError, match=r"truncated GGUF file: tensor .* runs past the end"):
        open_model(path)
    path.write_bytes(data[:10])
    with pytest.raises(TensorguardError, match=r"truncated GGUF file \(10 bytes\)"):
        open_model(path)


def test_unknown_version(tmp_path, weights):
    path = llama_gguf(tmp_path / "m.gguf", weights)
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 7)
    path.write_bytes(bytes(data))
    with pytest.raises(TensorguardError, match="unknown GGUF version 7"):
        open_model(path)


@pytest.mark.parametrize("qtype", [Q.Q8_1, Q.F64])
def test_type_gguf_quants_cannot_dequantize_is_refused_by_name(tmp_path, qtype):
    block, size = GGML_QUANT_SIZES[qtype]
    writer = GGUFWriter(tmp_path / "m.gguf", "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 64 // block * size), np.uint8), raw_dtype=qtype)
    write(writer)
    with pytest.raises(TensorguardError, match=f"unsupported tensor type {qtype.name} "):
        open_model(tmp_path / "m.gguf")


def test_unknown_type_number_is_refused(tmp_path):
    writer = GGUFWriter(tmp_path / "m.gguf", "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    write(writer)
    data = bytearray((tmp_path / "m.gguf").read_bytes())
    at = data.index(b"token_embd.weight") + len("token_embd.weight") + 4 + 2 * 8  # n_dims, 2 dims
    data[at:at + 4] = struct.pack("<I", 99)
    (tmp_path / "m.gguf").write_bytes(bytes(data))
    with pytest.raises(TensorguardError, match="unsupported tensor type 99"):
        open_model(tmp_path / "m.gguf")


def test_gguf_lora_adapter_is_refused(tmp_path):
    writer = GGUFWriter(tmp_path / "lora.gguf", "llama")
    writer.add_type("adapter")
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 32), np.float32))
    write(writer)
    with pytest.raises(TensorguardError, match="GGUF LoRA adapter"):
        open_model(tmp_path / "lora.gguf")


def write(writer: GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- commands --------------------------------------------------------------------------------------

FP_SPEC = ModelSpec(scheme="llama", hidden=64, layers=3, intermediate=128, vocab=128, heads=4, kv_heads=2)


@pytest.mark.parametrize(("qtype", "dtype"), [(Q.F32, torch.float32), (Q.F16, torch.float16)])
def test_fingerprint_of_a_float_gguf_equals_its_safetensors_source(tmp_path, run_cli, qtype, dtype):
    weights = make_weights(FP_SPEC, 0)
    st = save_model(weights, tmp_path / "src.safetensors", dtype=dtype)
    gg = llama_gguf(tmp_path / "src.gguf", weights, qtype)
    outs = []
    for model, out in ((st, tmp_path / "a"), (gg, tmp_path / "b")):
        r = run_cli("fingerprint", model, "-o", out, "--samples", "2", "--device", "cpu", "--json", "-q")
        assert r.code == 0, r.err
        outs.append(json.loads(r.out))
    assert outs[0] == outs[1]  # same name ("src"), same tensors, same bytes: same fingerprint


def test_inspect_and_compare_on_gguf(tmp_path, run_cli):
    weights = make_weights(FP_SPEC, 0)
    st = save_model(weights, tmp_path / "base.safetensors")
    f32 = llama_gguf(tmp_path / "base-f32.gguf", weights)
    q8 = llama_gguf(tmp_path / "base-q8.gguf", weights, Q.Q8_0)
    inspected = run_cli("inspect", q8, "--json")
    assert inspected.code == 0, inspected.err
    data = json.loads(inspected.out)
    assert data["layout"] == "gguf" and "Q8_0" in data["dtypes"] and "F32" in data["dtypes"]
    same = json.loads(run_cli("compare", st, f32, "--json", "-q").out)
    assert same["verdict"]["label"] == "same weights"
    derived = json.loads(run_cli("compare", st, q8, "--json", "-q").out)
    assert derived["verdict"]["label"] == "derived"
    assert derived["weights"]["matrix_cosine"] > 0.999
    requantized = requantize(q8, tmp_path / "base-q4.gguf", Q.Q4_0)
    again = json.loads(run_cli("compare", q8, requantized, "--json", "-q").out)
    assert again["verdict"]["label"] == "derived"
    sensitivity = run_cli("sensitivity", q8, "-o", tmp_path / "sens", "--samples", "2",
                          "--noise", "gaussian", "-q")
    assert sensitivity.code == 0, sensitivity.err


def test_lora_adapter_over_a_gguf_base(tmp_path, weights):
    from tensorguard.synthetic import save_lora_adapter

    base = llama_gguf(tmp_path / "base.gguf", weights, Q.Q8_0)
    a, b = torch.randn(4, 64), torch.randn(64, 4)
    adapter = save_lora_adapter(tmp_path / "lora", {
        "base_model.model." + Q_PROJ.removesuffix(".weight") + ".lora_A.weight": a,
        "base_model.model." + Q_PROJ.removesuffix(".weight") + ".lora_B.weight": b}, r=4, lora_alpha=8)
    with open_model(adapter, base=base) as src, open_model(base) as plain:
        assert src.format is WeightFormat.GGUF and src.claims == plain.claims
        torch.testing.assert_close(src.read(Q_PROJ), plain.read(Q_PROJ) + 2 * b @ a, rtol=0, atol=1e-6)


def test_bad_gguf_is_one_line_and_exit_2_in_every_command(tmp_path, run_cli, weights):
    path = llama_gguf(tmp_path / "m.gguf", weights)
    path.write_bytes(path.read_bytes()[:-64])
    for args in (("inspect", path), ("fingerprint", path, "-o", tmp_path / "o"),
                 ("sensitivity", path, "-o", tmp_path / "s"), ("compare", path, path)):
        r = run_cli(*args)
        assert r.code == 2, (args, r.err)
        assert "truncated GGUF file" in r.err and r.err.strip().count("\n") == 0, r.err
