"""``tensorguard compare`` end to end: pairs, the 3-model matrix and its plots, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lineage_models import write_tokenizer
from tensorguard.reference import bundled_dir
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_lora_adapter, save_model
from tensorguard.testing.disguises import vocabulary

SPEC = ModelSpec(scheme="llama", hidden=64, layers=3, intermediate=160, vocab=256, heads=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    base = make_weights(SPEC, 0)
    for folder in (root, root / "other"):  # token strings: independence is then evidence
        folder.mkdir(exist_ok=True)
        write_tokenizer(folder, vocabulary(SPEC.vocab))
    return {
        "base": str(save_model(base, root / "base.safetensors")),
        "tuned": str(save_model(finetune(base, 0.05, 1), root / "tuned.safetensors")),
        "other": str(save_model(finetune(make_weights(SPEC, 5), 0.05, 1), root / "other")),
        "gpt2": str(save_model(make_weights(ModelSpec(scheme="gpt2", hidden=64, layers=3,
                                                      intermediate=160), 0), root / "gpt2.safetensors")),
    }


def test_pair_text_report(run_cli, models):
    r = run_cli("compare", models["base"], models["tuned"], "-q")
    assert r.code == 0, r.err
    assert "verdict: derived: independence test p = " in r.out
    assert "fingerprint distance:" in r.out and "weights: " in r.out and "combined (Fisher)" in r.out


def test_pair_json_is_deterministic(run_cli, models):
    first = run_cli("compare", models["base"], models["other"], "--json")
    second = run_cli("compare", models["base"], models["other"], "--json")
    assert first.code == 0 and first.out == second.out
    data = json.loads(first.out)
    assert data["verdict"]["label"] == "independent"
    assert data["independence"]["p_value"] > 1e-3
    assert set(data) >= {"fingerprint", "weights", "independence", "inputs"}


def test_different_architectures_are_not_derived(run_cli, models):
    r = run_cli("compare", models["base"], models["gpt2"], "--json")
    data = json.loads(r.out)
    assert r.code == 0 and data["verdict"]["label"] == "inconclusive"
    assert data["weights"]["applicable"] is False and data["weights"]["matrix_cosine"] is None
    assert data["independence"]["applicable"] is False


def test_three_models_matrix_and_plots(run_cli, models, tmp_path):
    imgs = tmp_path / "imgs"
    args = ("compare", models["base"], models["tuned"], models["other"], "--plot-dir", imgs, "--json")
    r = run_cli(*args)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["models"] == ["base", "tuned", "other"]
    signals = {s["signal"]: s["values"] for s in data["signals"]}
    assert set(signals) == {"fingerprint", "cosine", "independence", "signature"}
    assert signals["signature"][0][1] > 0.5 and signals["signature"][0][2] < 0.2
    assert signals["cosine"][0][1] > 0.9 and abs(signals["cosine"][0][2]) < 0.1
    assert signals["independence"][0][1] > 6 and signals["independence"][0][2] < 3
    assert signals["fingerprint"][1][0] == signals["fingerprint"][0][1]
    assert [c["verdict"]["label"] for c in data["comparisons"]] == ["derived", "independent",
                                                                    "independent"]
    names = sorted(p.name for p in imgs.iterdir())
    assert names == ["similarity_cosine.png", "similarity_dendrogram.png",
                     "similarity_fingerprint.png", "similarity_independence.png",
                     "similarity_signature.png"]
    assert all((imgs / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    again = run_cli(*args)
    assert again.code == 2 and "already exists" in again.err and "--force" in again.err
    forced = run_cli(*args, "--force")
    assert forced.code == 0 and forced.out == r.out
    text = run_cli("compare", models["base"], models["tuned"], models["other"])
    assert "[0] vs [1]: derived" in text.out and "independence: -log10 p" in text.out


def test_mixed_model_and_fingerprint(run_cli, models):
    r = run_cli("compare", models["base"], bundled_dir() / "phi-4_features.json", "--json")
    data = json.loads(r.out)
    assert r.code == 0 and data["inputs"] == ["model", "fingerprint"]
    assert data["weights"] is None and data["verdict"]["label"] == "inconclusive"


@pytest.mark.parametrize("args", [["one"], []])
def test_too_few_arguments_exit_2(run_cli, models, args):
    r = run_cli("compare", *[models["base"] for _ in args])
    assert r.code == 2


def test_bad_inputs_exit_2_on_one_line(run_cli, models, tmp_path):
    missing = run_cli("compare", models["base"], tmp_path / "nope.safetensors")
    assert missing.code == 2 and missing.err.count("\n") == 1 and "nope.safetensors" in missing.err
    other = tmp_path / "x_features.json"
    other.write_text(json.dumps({"schema": "other/9", "model_name": "x", "global_mean": 0.0}))
    schema = run_cli("compare", other, models["base"])
    assert schema.code == 2 and "schema" in schema.err and "Traceback" not in schema.err
    assert run_cli("compare", models["base"], models["tuned"], "--blocks", "0").code == 2


def test_bf16_cast_named_in_text(run_cli, models, tmp_path):
    cast = save_model(make_weights(SPEC, 0), tmp_path / "cast.safetensors", dtype=torch.bfloat16)
    r = run_cli("compare", models["base"], cast)
    assert "verdict: same weights: all 30 tensors identical after a dtype cast (F32 -> BF16)" in r.out


def test_a_lora_adapter_is_compared_as_its_merged_model(tmp_path: Path, run_cli) -> None:
    """An adapter on either side: merged onto --base, or onto the other input (named by its
    config, or fitting its shapes), and the report says which."""
    weights = make_weights(ModelSpec(layers=2), 0)
    base = save_model(weights, tmp_path / "Base-Model")
    gen = torch.Generator().manual_seed(0)
    prefix = "base_model.model.model.layers.0.mlp.up_proj."
    lora = {prefix + "lora_A.weight": torch.randn(4, 64, generator=gen),
            prefix + "lora_B.weight": torch.randn(128, 4, generator=gen)}
    adapter = save_lora_adapter(tmp_path / "tuned", lora, r=4, lora_alpha=4,
                                base_model_name_or_path="someone/Base-Model")
    for args in ((adapter, base), (base, adapter)):
        r = run_cli("compare", *args, "--json", "--samples", "2")
        assert r.code == 0, r.err
        data = json.loads(r.out)
        assert data["verdict"]["label"] == "derived"
        assert data["notes"][0] == ("tuned: a LoRA adapter, merged onto the other input Base-Model "
                                    "(its config names it)")
        assert data["notes"][1].startswith("no readable tokenizer beside ")  # rows paired by index
    unnamed = save_lora_adapter(tmp_path / "unnamed", lora, r=4, lora_alpha=4)
    assert "(its shapes fit)" in run_cli("compare", base, unnamed, "--samples", "2").out
    explicit = run_cli("compare", adapter, base, "--base", base, "--samples", "2")
    assert explicit.code == 0 and f"merged onto {base}" in explicit.out
    unrelated = save_model(make_weights(ModelSpec(layers=2, hidden=32, heads=2), 1), tmp_path / "small")
    r = run_cli("compare", adapter, unrelated, "--samples", "2")
    assert r.code == 2 and "fits no other input" in r.err and "--base" in r.err


def test_a_quantized_copy_is_derived_and_said_to_be_quantized(tmp_path: Path) -> None:
    """A Q4_0 GGUF of a model: `derived` (never `same weights`), with a note on its storage."""
    from gguf import GGMLQuantizationType

    from tensorguard.lineage import compare
    from tensorguard.testing.gguf_write import requantize, save_gguf

    weights = make_weights(ModelSpec(layers=2, hidden=64, heads=4, intermediate=128), 0)
    source = save_model(weights, tmp_path / "src.safetensors")
    q4 = requantize(save_gguf(weights, tmp_path / "f32.gguf", arch="llama", heads=4),
                    tmp_path / "q4.gguf", GGMLQuantizationType.Q4_0)
    result = compare(source, q4, samples=2, device="cpu")
    assert result.verdict.label == "derived"
    assert result.notes[0] == "q4: stored quantized (gguf: Q4_0)"
    assert result.notes[1].startswith("no readable tokenizer beside src")
    assert 0.99 < result.weights.matrix_cosine < 1.0
