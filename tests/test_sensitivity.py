"""Layer sensitivity: closed forms against autograd and direct maths, ranking, CLI outputs and errors."""

from __future__ import annotations

import json
import math
from dataclasses import astuple
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import tensorguard
from tensorguard import sensitivity as sens
from tensorguard.app.sensitivity import analyze_models
from tensorguard.errors import TensorguardError
from tensorguard.loading import ModelSource, open_model
from tensorguard.plots.sensitivity import depth_profile
from tensorguard.probes import ALL_KINDS, make_probe
from tensorguard.synthetic import ModelSpec, make_weights, save_lora_adapter, save_model

SPEC = ModelSpec(scheme="llama", hidden=64, layers=2, intermediate=128, vocab=80, heads=4, kv_heads=2)
LOW_LAYER = "model.layers.1.mlp.up_proj.weight"


def _weights_f64(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {n: fh.get_tensor(n).to(torch.float64) for n in sorted(fh.keys())}


def _probes(weights: dict[str, torch.Tensor], kind: str, dim: int, seeds: range) -> list:
    fgsm = next(w for w in weights.values() if w.ndim == 2 and w.shape[1] == dim)
    return [make_probe(kind, dim, fgsm.float() if kind == "adversarial" else None, seed=s)
            for s in seeds]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    save_model(make_weights(SPEC, 0), path)
    return path


@pytest.fixture(scope="module")
def low_pass_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One layer is (5x) the projection onto the lowest 4 rfft bins: it amplifies low frequencies."""
    weights = make_weights(SPEC, 1)
    eye = torch.eye(SPEC.hidden, dtype=torch.float64)
    spectrum = torch.fft.rfft(eye, dim=1)
    spectrum[:, 4:] = 0
    projection = torch.fft.irfft(spectrum, n=SPEC.hidden, dim=1)  # symmetric, rank 7
    weights[LOW_LAYER] = (5.0 * projection.repeat(2, 1)).float()  # (intermediate, hidden)
    path = tmp_path_factory.mktemp("low") / "lowpass.safetensors"
    save_model(weights, path)
    return path


def test_gradient_norm_scores_match_autograd(model: Path) -> None:
    """The production path of the paper's metric (``analyze``), against autograd's gradient norm."""
    options = sens.Options(metric="gradient-norm", samples=3)
    with open_model(model) as source:
        result = sens.analyze(source, options)
    weights = _weights_f64(model)
    matrices = {n: w for n, w in weights.items() if w.ndim == 2}
    raw: dict[str, dict[str, float]] = {}
    for name, w in matrices.items():
        leaf = w.float().requires_grad_(True)
        raw[name] = {}
        for kind in ALL_KINDS:
            norms = []
            for probe in _probes(weights, kind, w.shape[1], range(3)):
                (probe.x[None] @ leaf.T).norm().backward()
                norms.append(float(leaf.grad.norm()))
                leaf.grad = None
            raw[name][kind] = sum(norms) / len(norms)
    for layer in result.layers:
        for kind in ALL_KINDS:
            mean = sum(r[kind] for r in raw.values()) / len(raw)
            assert layer.scores[kind] == pytest.approx(raw[layer.name][kind] / mean, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_response_matches_direct_computation(tmp_path: Path, dtype: torch.dtype,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    save_model(make_weights(SPEC, 2), path, dtype=dtype)
    row_blocks = ModelSource.row_blocks  # several row chunks per tensor:
    monkeypatch.setattr(ModelSource, "row_blocks",
                        lambda self, name, **kw: row_blocks(self, name, **{**kw, "max_elements": 1000}))
    with open_model(path) as source:
        result = sens.analyze(source, sens.Options(samples=4))
    weights = _weights_f64(path)
    for layer in result.layers:
        w = weights[layer.name]
        gain = float(w.norm()) / math.sqrt(w.shape[1])
        for kind in ALL_KINDS:
            ratios = []
            for probe in _probes(weights, kind, w.shape[1], range(4)):
                d = probe.delta.to(torch.float64)
                ratios.append(float((w @ d).norm() / d.norm()) / gain)
            assert layer.scores[kind] == pytest.approx(sum(ratios) / 4, rel=1e-5), (layer.name, kind)
        assert layer.mean == pytest.approx(sum(layer.scores.values()) / len(ALL_KINDS), rel=1e-5)
    ranked = [la.mean for la in result.layers]
    assert ranked == sorted(ranked, reverse=True)


def test_low_frequency_amplifier_ranked_first(low_pass_model: Path) -> None:
    with open_model(low_pass_model) as source:
        result = sens.analyze(source, sens.Options(kinds=("low_frequency", "high_frequency"),
                                                   samples=5, attention_test=True))
    by_kind = {s.target: s for s in result.splits}
    low = by_kind["low_frequency"]
    assert low.sensitive == [LOW_LAYER]
    layer = next(la for la in result.layers if la.name == LOW_LAYER)
    # a rank-7 projection passes the whole low band: gain sqrt(in / rank) over its average gain
    assert layer.scores["low_frequency"] == pytest.approx(math.sqrt(64 / 7), rel=1e-5)
    assert layer.scores["high_frequency"] < 1e-5
    assert LOW_LAYER in by_kind["high_frequency"].non_sensitive
    attention = [la for la in result.layers if la.role == "attention"]
    contrast = next(c for c in result.attention_test or [] if c.target == "low_frequency")
    assert contrast.attention_layers == len(attention) == 8
    assert contrast.attention_mean == pytest.approx(
        sum(la.scores["low_frequency"] for la in attention) / 8, rel=1e-5)


def test_repeat_seeds_equal_one_sample(model: Path) -> None:
    with open_model(model) as source:
        repeated = sens.analyze(source, sens.Options(samples=5, seeds="repeat"))
        single = sens.analyze(source, sens.Options(samples=1))
        distinct = sens.analyze(source, sens.Options(samples=5))
    assert repeated.layers == single.layers
    assert distinct.layers != single.layers


def test_parse_kinds() -> None:
    assert sens.parse_kinds("all") == ALL_KINDS
    assert sens.parse_kinds("low_frequency, adversarial") == ("adversarial", "low_frequency")
    with pytest.raises(TensorguardError, match="bogus"):
        sens.parse_kinds("bogus")
    assert sens.parse_kinds(["low_frequency", "gaussian"]) == ("gaussian", "low_frequency")


def test_public_verb_and_option_errors(model: Path) -> None:
    result = tensorguard.analyze_sensitivity(model, kinds="gaussian", samples=2)
    with open_model(model) as source:
        assert result == sens.analyze(source, sens.Options(kinds=("gaussian",), samples=2))
    for bad, message in ((dict(metric="loudness"), "metric='loudness'"), (dict(samples=0), "samples=0"),
                         (dict(threshold=float("nan")), "threshold=nan")):
        with pytest.raises(TensorguardError, match=message):
            tensorguard.analyze_sensitivity(model, **bad)


def test_cli_writes_deterministic_outputs(model: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    code, text, err = astuple(run_cli("sensitivity", str(model), "-o", str(out), "--metric", "response",
                           "--samples", "3", "--attention-test", "--top", "5"))
    assert (code, err) == (0, "")
    assert "model.layers" in text and "attention mean" in text
    json_path, png_path = out / "tiny_sensitivity.json", out / "tiny_sensitivity.png"
    data = json.loads(json_path.read_text())
    assert data["schema"] == sens.SCHEMA and data["model_name"] == "tiny"
    assert len(data["layers"]) == 16 and data["options"]["samples"] == 3
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 20_000
    first = json_path.read_bytes()
    code, _, err = astuple(run_cli("sensitivity", str(model), "-o", str(out),
                        "--samples", "3", "--attention-test", "--top", "5"))
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    code, _, _ = astuple(run_cli("sensitivity", str(model), "-o", str(out), "--metric", "response",
                      "--samples", "3", "--attention-test", "--top", "5", "--force"))
    assert code == 0 and json_path.read_bytes() == first


def test_cli_without_output_folder_writes_nothing(model: Path, tmp_path: Path, run_cli,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, text, err = astuple(run_cli("sensitivity", str(model), "--samples", "2", "--top", "3",
                                     "--metric", "response"))
    assert (code, err) == (0, "") and "top 3 layers" in text and "wrote" not in text
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("make_bad", [
    lambda d: d / "missing.safetensors",
    lambda d: (d / "text.safetensors").write_text("not a safetensors file") and d / "text.safetensors",
])
def test_cli_bad_input_exits_2(make_bad, tmp_path: Path, run_cli) -> None:
    bad = make_bad(tmp_path)
    code, out, err = astuple(run_cli("sensitivity", str(bad), "-o", str(tmp_path / "o")))
    assert code == 2 and out == ""
    assert err.startswith("tensorguard: error: ") and str(bad) in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_bad_noise_exits_2(model: Path, tmp_path: Path, run_cli) -> None:
    code, _, err = astuple(run_cli("sensitivity", str(model), "--noise", "pink",
                        "-o", str(tmp_path)))
    assert code == 2 and "pink" in err and len(err.strip().splitlines()) == 1


def test_cli_several_models_one_failing(model: Path, low_pass_model: Path, tmp_path: Path,
                                        run_cli) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "nowhere.safetensors"
    code, text, err = astuple(run_cli("sensitivity", str(model), str(missing),
                           str(low_pass_model), "-o", str(out), "--samples", "2",
                           "--noise", "low_frequency", "--metric", "response"))
    assert code == 1
    assert err.strip().splitlines() == [err.strip()] and str(missing) in err
    assert "lowpass" in text and "tiny" in text and "top layer" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["lowpass_sensitivity.json", "lowpass_sensitivity.png", "sensitivity_comparison.png",
                     "tiny_sensitivity.json", "tiny_sensitivity.png"]
    with open_model(model) as a, open_model(low_pass_model) as b:
        options = sens.Options(kinds=("low_frequency",), samples=2)
        results = [sens.analyze(a, options), sens.analyze(b, options)]
    blocks, rows = depth_profile(results, "ffn")
    assert blocks == [0, 1]
    assert rows[1][1] > 1.5 > rows[0][1]  # the low-pass layer lifts block 1 of the second model


def test_lora_adapter_scores_as_its_merged_model(tmp_path: Path) -> None:
    weights = make_weights(SPEC, 0)
    base = save_model(weights, tmp_path / "base.safetensors")
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 64, generator=gen), torch.randn(128, 4, generator=gen)
    prefix = "base_model.model.model.layers.0.mlp.up_proj."
    adapter = save_lora_adapter(tmp_path / "tuned", {prefix + "lora_A.weight": a,
                                                    prefix + "lora_B.weight": b}, r=4, lora_alpha=4)
    merged = dict(weights)
    merged["model.layers.0.mlp.up_proj.weight"] = weights["model.layers.0.mlp.up_proj.weight"] + b @ a
    options = sens.Options(samples=2)
    lora = analyze_models([str(adapter)], options, out_dir=tmp_path / "a", base=str(base)).results[0]
    with open_model(save_model(merged, tmp_path / "tuned.safetensors")) as source:
        want = sens.analyze(source, options)
    assert lora.model_name == "tuned"
    assert {s.name: s.scores for s in lora.layers} == {s.name: s.scores for s in want.layers}
    tuned = "model.layers.0.mlp.up_proj.weight"
    with open_model(base) as source:
        plain = {s.name: s.scores for s in sens.analyze(source, options).layers}
    assert plain[tuned] != {s.name: s.scores for s in want.layers}[tuned]  # the adapter mattered
