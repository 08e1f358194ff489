"""The forward sensitivity metric on a tiny llama run by ``transformers``: a damaged layer is ranked
first, the replay of the unperturbed blocks is exact, results are deterministic, errors are one line."""

from __future__ import annotations

import json
import sys
from dataclasses import astuple
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from tensorguard import report
from tensorguard import sensitivity as sens
from tensorguard.errors import MissingExtraError, TensorguardError
from tensorguard.forward import kl_by_layer, perturb
from tensorguard.loading import open_model
from tensorguard.probes import ALL_KINDS
from tensorguard.synthetic import ModelSpec, llama_config, make_weights, save_model

SPEC = ModelSpec(scheme="llama", hidden=64, layers=4, intermediate=128, vocab=96, heads=4, kv_heads=2)
DAMAGED = "model.layers.2.mlp.down_proj.weight"


def _save(weights: dict[str, torch.Tensor], folder: Path) -> Path:
    save_model(weights, folder)
    (folder / "config.json").write_text(json.dumps(llama_config(SPEC)))
    return folder


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Block 2's MLP writes a massive activation (one feature 100x too large) that the final norm
    ignores, as trained models do: noise at that layer's scale swamps every other feature."""
    weights = make_weights(SPEC, 0)
    weights[DAMAGED][5] *= 100
    weights["model.norm.weight"][5] = 0
    return _save(weights, tmp_path_factory.mktemp("damaged"))


def test_the_damaged_layer_is_ranked_first(damaged: Path) -> None:
    """First among the blocks' layers, several times the median; the embedding is the whole input
    of a random-weight model (every block only adds a little to it), so it is ranked apart."""
    result = sens.analyze_sensitivity(damaged, metric="forward")
    blocks = [la for la in result.layers if la.block is not None]
    assert blocks[0].name == DAMAGED
    assert blocks[0].mean > 3 * blocks[1].mean
    assert sum(blocks[0].scores[k] > 1.5 for k in ALL_KINDS) >= len(ALL_KINDS) - 1
    # scored: the embedding and each block's attention and MLP outputs, relative to the median
    assert len(result.layers) == 1 + 2 * SPEC.layers
    assert result.options.samples == sens.DEFAULT_SAMPLES[sens.Metric.FORWARD]
    words = sens.findings(result)
    assert "MLP output of block 2 (" in words[0]


def test_unperturbed_replay_is_the_clean_model(damaged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With zero strength, replaying recorded blocks and running the rest reproduces the clean
    next-token distribution exactly (KL zero up to rounding) for every layer and kind."""
    monkeypatch.setattr(perturb, "STRENGTH", 0.0)
    with open_model(damaged) as source:
        kl = kl_by_layer(source, ALL_KINDS, sequences=2)
    assert max(abs(v) for values in kl.values() for v in values) < 1e-6


def test_json_is_deterministic(damaged: Path) -> None:
    runs = [report.dumps(sens.analyze_sensitivity(damaged, metric="forward", kinds="gaussian,adversarial"))
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_missing_extra_is_one_line(damaged: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tensorguard\[forward\]'"):
        sens.analyze_sensitivity(damaged, metric="forward")
    code, _, err = astuple(run_cli("sensitivity", str(damaged), "--metric", "forward"))
    assert code == 2 and "tensorguard[forward]" in err and "Traceback" not in err


def test_a_model_without_configuration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bare.safetensors"
    save_model(make_weights(SPEC, 0), path)
    with pytest.raises(TensorguardError, match=r"config\.json"):
        sens.analyze_sensitivity(path, metric="forward")


def test_a_configuration_that_does_not_fit_is_refused_before_allocating(tmp_path: Path,
                                                                        run_cli) -> None:
    """A config.json of a 7B model beside tiny tensors: refused from the meta-device shapes (the
    model is never materialised), in one line, exit 2; ``auto`` falls back with that reason."""
    folder = _save(make_weights(SPEC, 0), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"hidden_size": 4096,
                                                             "intermediate_size": 11008}))
    code, _, err = astuple(run_cli("sensitivity", str(folder), "--metric", "forward"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "configuration does not fit the tensors" in err and "(config: (" in err
    result = sens.analyze_sensitivity(folder, kinds="gaussian")
    assert result.options.metric is sens.Metric.RESPONSE
    assert result.fallback is not None and "does not fit" in result.fallback


def test_a_model_too_large_for_the_machine_is_refused_before_allocating(
        damaged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float32 model may take half of the machine's memory: a larger one is refused from the
    meta-device shapes (``auto`` scores its weights instead), not killed by the system."""
    from tensorguard.forward import build

    with open_model(damaged) as source:
        params = sum(info.numel for info in source.tensors.values())
    monkeypatch.setattr(build, "physical_memory", lambda: params * 4)
    with pytest.raises(TensorguardError, match=r"MiB in float32, more than half of this machine's"):
        sens.analyze_sensitivity(damaged, metric="forward", kinds="gaussian")
    fallback = sens.analyze_sensitivity(damaged, kinds="gaussian")
    assert fallback.options.metric is sens.Metric.RESPONSE and "MiB" in (fallback.fallback or "")
    monkeypatch.setattr(build, "physical_memory", lambda: 3 * params * 4)
    assert sens.analyze_sensitivity(damaged, kinds="gaussian").options.metric is sens.Metric.FORWARD


def test_auto_runs_the_model_where_it_can(damaged: Path) -> None:
    """The default metric: ``forward`` for a model ``transformers`` can run."""
    auto = sens.analyze_sensitivity(damaged, kinds="gaussian")
    assert auto.options.metric is sens.Metric.FORWARD and auto.fallback is None
    assert auto == sens.analyze_sensitivity(damaged, metric="forward", kinds="gaussian")


def test_auto_falls_back_to_the_weights_saying_why(damaged: Path, tmp_path: Path, run_cli,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration, or no extra: the weight-only ``response`` metric, the reason in the result,
    the report (and the log with ``-v``); the scores are those of ``--metric response``."""
    bare = tmp_path / "bare.safetensors"
    save_model(make_weights(SPEC, 0), bare)
    auto = sens.analyze_sensitivity(bare, kinds="gaussian", samples=2)
    assert auto.options.metric is sens.Metric.RESPONSE and "config.json" in (auto.fallback or "")
    assert auto.layers == sens.analyze_sensitivity(bare, metric="response", kinds="gaussian",
                                                   samples=2).layers
    monkeypatch.setitem(sys.modules, "transformers", None)
    code, text, err = astuple(run_cli("sensitivity", str(damaged), "--noise", "gaussian",
                                      "--samples", "2"))
    assert code == 0 and "metric     response; 2 samples" in text and err == ""
    assert "(auto: no module named 'transformers'" in text.lower() or "tensorguard[forward]" in text
    code, text, _ = astuple(run_cli("sensitivity", str(damaged), "--noise", "gaussian", "--json"))
    data = json.loads(text)["results"][0]
    assert code == 0 and data["options"]["metric"] == "response"
    assert "tensorguard[forward]" in data["fallback"]


def test_cli_reports_findings(damaged: Path, run_cli) -> None:
    code, text, _ = astuple(run_cli("sensitivity", str(damaged), "--metric", "forward",
                                    "--noise", "low_frequency", "--top", "3"))
    assert code == 0
    assert "2 token sequences of 64" in text
    assert "MLP output of block 2 (" in text


def test_every_probe_kind_has_a_matched_strength_perturbation() -> None:
    """Each kind, at ``STRENGTH`` times each sequence's norm; frequency kinds along positions."""
    assert set(perturb.NOISES) == set(ALL_KINDS)
    gen = torch.Generator().manual_seed(0)
    clean = perturb.Clean(torch.randn(3, 64, 16, generator=gen), torch.randn(3, 64, 16, generator=gen))
    for kind in ALL_KINDS:
        delta = perturb.perturbation(kind, clean)
        ratio = delta.norm(dim=(1, 2)) / clean.output.norm(dim=(1, 2))
        torch.testing.assert_close(ratio, torch.full((3,), perturb.STRENGTH), rtol=1e-5, atol=0)
    spectrum = torch.fft.rfft(perturb.perturbation("low_frequency", clean).double(), dim=1).abs()
    assert spectrum[:, 33 // 8:].max() < 1e-6 * spectrum.max()
    spectrum = torch.fft.rfft(perturb.perturbation("high_frequency", clean).double(), dim=1).abs()
    assert spectrum[:, :33 // 2].max() < 1e-6 * spectrum.max()


def test_several_models_side_by_side(damaged: Path, tmp_path: Path) -> None:
    """Two models through the forward metric: a result each and the depth comparison figure."""
    from tensorguard.app.sensitivity import COMPARISON_FILE, analyze_models

    other = _save(make_weights(SPEC, 1), tmp_path / "other")
    done = analyze_models([str(damaged), str(other)], sens.Options(metric="forward", kinds="gaussian"),
                          out_dir=tmp_path / "out")
    assert not done.failures and len(done.results) == 2
    assert (tmp_path / "out" / COMPARISON_FILE).stat().st_size > 0
    assert done.results[0].layers[0].block == 2


def test_gpt2_conv1d_layers_and_its_file_names(tmp_path: Path) -> None:
    """Another architecture of the registry: GPT-2 (Conv1D layers, fused qkv, learned positions)."""
    spec = ModelSpec(scheme="gpt2", hidden=64, layers=2, intermediate=256, vocab=96, heads=4,
                     positions=64, tied=True)
    weights = make_weights(spec, 0)
    for block in range(spec.layers):  # the biases a real GPT-2 file has (optional in the registry)
        for name, size in (("attn.c_proj.bias", 64), ("mlp.c_fc.bias", 256), ("mlp.c_proj.bias", 64)):
            weights[f"transformer.h.{block}.{name}"] = torch.zeros(size)
    weights.setdefault("transformer.ln_f.bias", torch.zeros(64))
    save_model(weights, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 256,
         "vocab_size": 96, "n_positions": 64, "bos_token_id": 0, "eos_token_id": 0}))
    result = sens.analyze_sensitivity(tmp_path, metric="forward", kinds="gaussian")
    assert {la.name for la in result.layers} == {
        "transformer.wte.weight", *(f"transformer.h.{b}.{m}.c_proj.weight"
                                    for b in range(2) for m in ("attn", "mlp"))}
    assert all(la.scores["gaussian"] > 0 for la in result.layers)
