"""Model loading: every layout, every dtype, LoRA merging, and every bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tensorguard.errors import TensorguardError
from tensorguard.loading import Layout, LoraSource, open_model
from tensorguard.synthetic import ModelSpec, make_weights, save_lora_adapter, save_model

SPEC = ModelSpec(scheme="llama", hidden=32, layers=2, intermediate=64, vocab=50)


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return make_weights(SPEC, seed=1)


def write_raw(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


# --- layouts -----------------------------------------------------------------------------------

def test_single_file_lists_headers_and_reads_one_tensor(tmp_path, weights):
    path = save_model(weights, tmp_path / "llama-3.2-1b.safetensors", dtype=torch.bfloat16)
    with open_model(path) as src:
        assert src.layout is Layout.FILE
        assert src.name == "llama-3.2-1b"
        assert list(src.tensors) == sorted(weights)
        assert src.total_params == sum(w.numel() for w in weights.values())
        info = src.info("model.layers.0.mlp.up_proj.weight")
        assert (info.shape, info.dtype, info.numel) == ((64, 32), "BF16", 64 * 32)
        tensor = src.read(info.name, torch.float32)
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, weights[info.name].to(torch.bfloat16).float())
        assert torch.equal(src.read_rows(info.name, 3, 7, torch.float32), tensor[3:7])


def test_directory_with_model_safetensors_is_named_after_the_directory(tmp_path, weights):
    path = save_model(weights, tmp_path / "Qwen-tiny")
    with open_model(path) as src:
        assert (src.layout, src.name) == (Layout.DIRECTORY, "Qwen-tiny")


def test_name_option_wins(tmp_path, weights):
    path = save_model(weights, tmp_path / "a.safetensors")
    assert open_model(path, name="custom").name == "custom"


@pytest.mark.parametrize("entry", ["dir", "index", "shard"])
def test_indexed_shards_from_dir_index_or_any_shard(tmp_path, weights, entry):
    root = save_model(weights, tmp_path / "Llama-sharded", shards=3)
    path = {"dir": root, "index": root / "model.safetensors.index.json",
            "shard": root / "model-00002-of-00003.safetensors"}[entry]
    with open_model(path) as src:
        assert src.layout is Layout.INDEXED_SHARDS
        assert src.name == "Llama-sharded"
        assert len(src.shards) == 3
        assert list(src.tensors) == sorted(weights)
        name = "model.layers.1.mlp.down_proj.weight"
        assert torch.equal(src.read(name), weights[name])


def test_index_naming_a_missing_shard_is_refused(tmp_path, weights):
    root = save_model(weights, tmp_path / "m", shards=3)
    (root / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(TensorguardError,
                       match=r"model-00003-of-00003.safetensors listed in the index is missing"):
        open_model(root)


def test_index_naming_a_tensor_its_shard_lacks_is_refused(tmp_path, weights):
    root = save_model(weights, tmp_path / "m", shards=2)
    index = root / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(TensorguardError, match="has no such tensor"):
        open_model(root)


@pytest.mark.parametrize("base_name", ["phi-4", "model"])
def test_indexless_shard_set(tmp_path, weights, base_name):
    root = save_model(weights, tmp_path / "phi-dir", shards=3, index=False, base_name=base_name)
    for path in (root, root / f"{base_name}-00001-of-00003.safetensors"):
        with open_model(path) as src:
            assert src.layout is Layout.SHARDS
            assert src.name == ("phi-dir" if base_name == "model" else base_name)
            assert list(src.tensors) == sorted(weights)


def test_indexless_shards_with_two_digit_parts(tmp_path, weights):
    names = sorted(weights)
    for i, chunk in enumerate((names[:10], names[10:])):
        save_file({n: weights[n] for n in chunk}, str(tmp_path / f"phi-4-0{i + 1}-of-02.safetensors"))
    with open_model(tmp_path / "phi-4-01-of-02.safetensors") as src:
        assert (src.name, len(src.shards), len(src.tensors)) == ("phi-4", 2, len(weights))


def test_shard_set_with_a_part_missing_is_refused(tmp_path, weights):
    root = save_model(weights, tmp_path / "m", shards=4, index=False, base_name="phi-4")
    (root / "phi-4-00003-of-00004.safetensors").unlink()
    with pytest.raises(TensorguardError, match=r"incomplete: part\(s\) 3 of 4 missing"):
        open_model(root / "phi-4-00001-of-00004.safetensors")


def test_tensor_in_two_shards_is_refused(tmp_path, weights):
    save_file({"model.embed_tokens.weight": weights["model.embed_tokens.weight"]},
              str(tmp_path / "x-00001-of-00002.safetensors"))
    save_file({"model.embed_tokens.weight": weights["model.embed_tokens.weight"]},
              str(tmp_path / "x-00002-of-00002.safetensors"))
    with pytest.raises(TensorguardError, match="also appears in"):
        open_model(tmp_path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                   torch.float8_e4m3fn, torch.float8_e5m2])
def test_every_float_dtype_reads_as_float32(tmp_path, weights, dtype):
    path = save_model(weights, tmp_path / "m.safetensors", dtype=dtype)
    name = "model.layers.0.self_attn.q_proj.weight"
    with open_model(path) as src:
        assert src.read(name).dtype == dtype
        assert torch.equal(src.read(name, torch.float32), weights[name].to(dtype).float())


# --- LoRA ---------------------------------------------------------------------------------------

def write_adapter(root: Path, tensors: dict[str, torch.Tensor], **config) -> Path:
    return save_lora_adapter(root, tensors, **{"r": 4, "lora_alpha": 8, **config})


def test_lora_adapter_is_merged_on_read(tmp_path, weights):
    base = save_model(weights, tmp_path / "base.safetensors", dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 32, generator=gen), torch.randn(32, 4, generator=gen)
    ea, eb = torch.randn(4, 50, generator=gen), torch.randn(32, 4, generator=gen)
    prefix = "base_model.model.model."
    adapter = write_adapter(tmp_path / "my-lora", {
        prefix + "layers.0.self_attn.q_proj.lora_A.weight": a,
        prefix + "layers.0.self_attn.q_proj.lora_B.weight": b,
        prefix + "embed_tokens.lora_embedding_A": ea,
        prefix + "embed_tokens.lora_embedding_B": eb,
    })
    with pytest.raises(TensorguardError, match="pass its base model with base="):
        open_model(adapter)
    with open_model(adapter, base=base) as src:
        assert isinstance(src, LoraSource)
        assert (src.name, src.layout) == ("my-lora", Layout.LORA)
        q = "model.layers.0.self_attn.q_proj.weight"
        expected = weights[q].to(torch.bfloat16).float() + 2.0 * (b @ a)
        torch.testing.assert_close(src.read(q, torch.float32), expected, rtol=0, atol=1e-6)
        assert src.read(q).dtype == torch.bfloat16
        torch.testing.assert_close(src.read_rows(q, 5, 9, torch.float32), expected[5:9], rtol=0, atol=1e-6)
        emb = "model.embed_tokens.weight"
        expected_emb = weights[emb].to(torch.bfloat16).float() + 2.0 * (eb @ ea).T
        torch.testing.assert_close(src.read(emb, torch.float32), expected_emb, rtol=0, atol=1e-6)
        torch.testing.assert_close(src.read_rows(emb, 10, 20, torch.float32), expected_emb[10:20],
                                   rtol=0, atol=1e-6)
        untouched = "model.layers.1.mlp.up_proj.weight"
        assert torch.equal(src.read(untouched, torch.float32), weights[untouched].to(torch.bfloat16).float())


def test_lora_fan_in_fan_out_and_rslora_on_gpt2(tmp_path):
    spec = ModelSpec(scheme="gpt2", hidden=32, layers=1, intermediate=64, vocab=40)
    weights = make_weights(spec, 3)
    base = save_model(weights, tmp_path / "gpt2.safetensors")
    a, b = torch.randn(4, 32), torch.randn(96, 4)  # c_attn: (in=32, out=96) stored transposed
    adapter = write_adapter(tmp_path / "ad", {
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": a,
        "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": b,
    }, fan_in_fan_out=True, use_rslora=True, lora_alpha=4)
    name = "transformer.h.0.attn.c_attn.weight"
    with open_model(adapter, base=base) as src:
        expected = weights[name] + (4 / 2.0) * (b @ a).T
        torch.testing.assert_close(src.read(name), expected, rtol=0, atol=1e-5)


def test_lora_that_does_not_fit_the_base_is_refused(tmp_path, weights):
    base = save_model(weights, tmp_path / "base.safetensors")
    adapter = write_adapter(tmp_path / "ad", {
        "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": torch.randn(4, 48),
        "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": torch.randn(64, 4),
    })
    with pytest.raises(TensorguardError, match="does not fit base tensor"):
        open_model(adapter, base=base)


def test_base_without_adapter_is_refused(tmp_path, weights):
    path = save_model(weights, tmp_path / "m.safetensors")
    with pytest.raises(TensorguardError, match="only for LoRA adapter"):
        open_model(path, base=path)


# --- bad input ----------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(TensorguardError, match="no such file or directory"):
        open_model(tmp_path / "nope.safetensors")


def test_directory_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TensorguardError, match=r"no \.safetensors files"):
        open_model(tmp_path)


@pytest.mark.parametrize(("content", "message"), [
    (b"hello, this is plain text and certainly not a model", "not a safetensors file"),
    (b"PK\x03\x04" + b"\0" * 64, "zip archive"),
    (b"\x80\x02}q\x00" + b"\0" * 64, "pickle"),
    (b"abc", "only 3 bytes"),
])
def test_not_a_safetensors_file(tmp_path, content, message):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(TensorguardError, match=message):
        open_model(path)


def test_header_length_whose_first_byte_looks_like_a_pickle_is_still_safetensors(tmp_path):
    """The first byte is the header length's low byte: 0x80 there is a valid header, not a pickle."""
    name = "model.embed_tokens.weight"
    header = {name: {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    raw = json.dumps(header).encode()
    raw += b" " * ((0x80 - len(raw)) % 0x100)
    assert len(raw) % 0x100 == 0x80
    path = write_raw(tmp_path / "t.safetensors", raw, struct.pack("<4f", 1, 2, 3, 4))
    assert path.read_bytes()[0] == 0x80
    with open_model(path) as src:
        assert src.read(name).tolist() == [[1, 2], [3, 4]]


def test_header_length_larger_than_file(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    path = write_raw(tmp_path / "t.safetensors", header, length=5000)
    with pytest.raises(TensorguardError, match="truncated: header length 5000 exceeds the file size"):
        open_model(path)


def test_header_not_json(tmp_path):
    path = write_raw(tmp_path / "t.safetensors", b"{not json at all}")
    with pytest.raises(TensorguardError, match="corrupt header: not valid JSON"):
        open_model(path)


def test_offsets_outside_the_file(tmp_path, weights):
    path = save_model(weights, tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # an interrupted download
    with pytest.raises(TensorguardError, match="run past the end of the file"):
        open_model(path)


def test_offsets_inconsistent_with_shape(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}
    with pytest.raises(TensorguardError, match="shape \\[2, 2\\] of F32 needs 16"):
        open_model(write_raw(tmp_path / "t.safetensors", header, b"\0" * 16))


def test_unsupported_dtype(tmp_path):
    header = {"w": {"dtype": "F8_E8M0", "shape": [2, 2], "data_offsets": [0, 4]}}
    with pytest.raises(TensorguardError, match="unsupported dtype F8_E8M0"):
        open_model(write_raw(tmp_path / "t.safetensors", header, b"\0" * 4))


def test_model_without_2d_weights(tmp_path):
    path = tmp_path / "norms.safetensors"
    save_file({"model.norm.weight": torch.ones(8), "model.layers.0.input_layernorm.weight": torch.ones(8)},
              str(path))
    with pytest.raises(TensorguardError, match="no 2-D floating-point weight tensors"):
        open_model(path)


def test_several_unrelated_files_in_a_directory(tmp_path, weights):
    save_model(weights, tmp_path / "a.safetensors")
    save_model(weights, tmp_path / "b.safetensors")
    with pytest.raises(TensorguardError, match=r"several unrelated \.safetensors files"):
        open_model(tmp_path)


def test_row_blocks_cover_the_tensor_in_bounded_blocks(tmp_path: Path) -> None:
    path = save_model(make_weights(ModelSpec(vocab=100), 0), tmp_path / "m.safetensors")
    with open_model(path) as source:
        name = "model.embed_tokens.weight"
        blocks = list(source.row_blocks(name, max_elements=640, dtype=torch.float32))
        assert [start for start, _ in blocks] == list(range(0, 100, 10))
        assert all(b.numel() <= 640 and b.dtype == torch.float32 for _, b in blocks)
        assert torch.equal(torch.cat([b for _, b in blocks]), source.read(name, torch.float32))
        part = list(source.row_blocks(name, max_elements=1, start=5, stop=8))
        assert [(s, b.shape[0]) for s, b in part] == [(5, 1), (6, 1), (7, 1)]
