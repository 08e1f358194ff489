"""``tensorguard inspect``: header-only summaries, --json, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tensorguard import __version__
from tensorguard.loading import open_model
from tensorguard.summary import summarize
from tensorguard.synthetic import ModelSpec, make_weights, save_model


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    spec = ModelSpec(scheme="llama", hidden=32, layers=3, intermediate=64, vocab=100, heads=4, kv_heads=2)
    return save_model(make_weights(spec, 0), tmp_path_factory.mktemp("m") / "Tiny-Llama",
                      dtype=torch.bfloat16, shards=2)


def test_summary_from_headers(sharded):
    with open_model(sharded) as src:
        s = summarize(src)
    assert (s.name, s.layout, s.num_blocks, s.hidden_size, s.vocab_size) == (
        "Tiny-Llama", "indexed-shards", 3, 32, 100)
    assert s.shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert s.dtypes == {"BF16": s.total_params}
    roles = {r.role: (r.tensors, r.params) for r in s.roles}
    assert roles["attention"] == (12, 3 * (32 * 32 * 2 + 16 * 32 * 2))
    assert roles["ffn"] == (9, 3 * 3 * 32 * 64)
    assert roles["embedding"] == (1, 3200)
    assert roles["other"] == (1, 3200)  # lm_head
    assert sum(p for _, p in roles.values()) == s.total_params


def test_inspect_reads_no_tensor_data(sharded, monkeypatch):
    import safetensors

    def forbidden(*args, **kwargs):
        raise AssertionError("inspect opened tensor data")

    monkeypatch.setattr(safetensors, "safe_open", forbidden)
    with open_model(sharded) as src:
        summarize(src)


def test_cli_text_and_json(sharded, run_cli):
    text = run_cli("inspect", sharded)
    assert text.code == 0, text.err
    assert "Tiny-Llama" in text.out and "indexed-shards" in text.out and "attention" in text.out
    js = run_cli("inspect", sharded, "--json")
    data = json.loads(js.out)
    assert data["total_params"] > 0 and data["num_blocks"] == 3 and data["vocab_size"] == 100


def test_cli_name_option(sharded, run_cli):
    assert json.loads(run_cli("inspect", sharded, "--name", "mine", "--json").out)["name"] == "mine"


@pytest.mark.parametrize("make_bad", [
    lambda p: p / "missing.safetensors",
    lambda p: (p / "x.safetensors").write_text("not a model") and p / "x.safetensors",
    lambda p: p,  # an empty directory
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, run_cli, make_bad):
    result = run_cli("inspect", make_bad(tmp_path))
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("tensorguard: error: ")
    assert "Traceback" not in result.err


def test_cli_usage_error_exit_2(run_cli):
    assert run_cli("inspect").code == 2
    assert run_cli("no-such-command").code == 2


def test_version(run_cli):
    result = run_cli("--version")
    assert result.code == 0 and __version__ in result.out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scheme", ["llama", "gpt2", "neox", "bert", "t5"])
@pytest.mark.parametrize("shards", [1, 3])
def test_every_naming_scheme_dtype_and_layout(tmp_path, scheme, dtype, shards):
    spec = ModelSpec(scheme=scheme, hidden=48, layers=3, intermediate=96, vocab=70)
    weights = make_weights(spec, 0)
    target = tmp_path / (f"{scheme}-tiny" if shards > 1 else f"{scheme}.safetensors")
    path = save_model(weights, target, dtype=dtype, shards=shards)
    with open_model(path) as src:
        s = summarize(src)
    assert (s.num_blocks, s.hidden_size, s.vocab_size) == (3, 48, 70)
    assert s.total_params == sum(w.numel() for w in weights.values())
    assert s.dtypes == {"F32" if dtype == torch.float32 else "BF16": s.total_params}
    assert {r.role for r in s.roles} >= {"embedding", "attention", "ffn", "norm"}


def test_inspect_shows_format_quantization_and_claims(tmp_path: Path, run_cli) -> None:
    """A Q4_0 GGUF: format, quantization per role (bits per weight, group size), what the file
    claims (labelled as such) and the tied output head."""
    from gguf import GGMLQuantizationType

    from tensorguard.testing.gguf_write import requantize, save_gguf

    spec = ModelSpec(layers=2, hidden=64, heads=4, kv_heads=2, vocab=256, intermediate=128, tied=True)
    plain = save_gguf(make_weights(spec, 0), tmp_path / "m.gguf", arch="llama", heads=4, kv_heads=2,
                      metadata={"general.base_model.count": 1, "general.base_model.0.name": "Llama-Tiny"})
    q4 = requantize(plain, tmp_path / "q.gguf", GGMLQuantizationType.Q4_0)
    result = run_cli("inspect", q4, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["format"] == "gguf" and data["tied_embeddings"] is True
    assert data["hidden_size"] == 64 and data["vocab_size"] == 256
    rows = {q["role"]: q for q in data["quantization"]}
    assert set(rows) == {"attention", "embedding", "ffn"}
    assert all(q["scheme"] == "Q4_0" and q["bits_per_weight"] == 4.5 and q["group_size"] == 32
               for q in rows.values())
    assert rows["ffn"]["params"] == 2 * 3 * 128 * 64
    assert data["claims"]["architecture"] == "llama"
    assert "the file claims" in run_cli("inspect", q4).out and "bits/weight" in run_cli("inspect", q4).out
    claimed = run_cli("inspect", plain)
    assert "base model           Llama-Tiny" in claimed.out, claimed.out
    assert json.loads(run_cli("inspect", plain, "--json").out)["claims"]["base_models"][0]["name"] == (
        "Llama-Tiny")
    safetensors = json.loads(run_cli("inspect", save_model(make_weights(spec, 0),
                                                           tmp_path / "m.safetensors"), "--json").out)
    assert safetensors["format"] == "safetensors" and safetensors["quantization"] == []
    assert safetensors["claims"] is None and safetensors["tied_embeddings"] is True
