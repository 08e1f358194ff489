"""The forward metric on every architecture of the registry that ``transformers`` runs as a causal
LM: a tiny random model of each, saved by ``transformers`` itself, is rebuilt from the file by
``tensorguard.forward`` with the same logits, and scored. Formats ``transformers`` stores in a
layout of its own (GPT-NeoX's head, Mixtral's experts) go through its own conversions."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import pytest
import torch

from tensorguard import sensitivity as sens
from tensorguard.architectures import lookup
from tensorguard.forward import build_model
from tensorguard.loading import open_model

transformers = pytest.importorskip("transformers")

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 128,
         "max_position_embeddings": 128, "pad_token_id": 0}
#: model type -> its extra configuration. Each block scores its attention output and
#: its MLP output, and the model its embedding: 5 layers for 2 blocks (Mixtral: its experts are
#: outside the registry's dense part, so 3).
CAUSAL: dict[str, dict[str, object]] = {
    "llama": {}, "mistral": {}, "qwen2": {}, "qwen3": {}, "gemma": {}, "gemma2": {},
    "mixtral": {"num_local_experts": 2}, "phi3": {}, "phi": {}, "starcoder2": {}, "gpt2": {},
    "gptj": {"rotary_dim": 4}, "falcon": {}, "gpt_neox": {}, "bert": {"is_decoder": True},
}


def _saved(model_type: str, extra: dict[str, object], folder: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **SIZES, **extra)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("model_type", sorted(CAUSAL))
def test_each_causal_architecture_is_rebuilt_and_scored(model_type: str, tmp_path: Path) -> None:
    original = _saved(model_type, CAUSAL[model_type], tmp_path / model_type)
    with open_model(tmp_path / model_type) as source:
        built = build_model(source)
    tokens = torch.arange(1, 17)[None]
    with torch.no_grad():
        assert torch.equal(built.model(tokens).logits, original(tokens).logits)
    result = sens.analyze_sensitivity(tmp_path / model_type, kinds="gaussian", samples=1)
    assert result.options.metric is sens.Metric.FORWARD and result.fallback is None
    assert len(result.layers) == (3 if model_type == "mixtral" else 5)
    assert all(lookup(la.name) is not None for la in result.layers)  # named by the registry
    assert all(la.scores["gaussian"] > 0 for la in result.layers), result.layers


def test_an_encoder_decoder_is_refused_in_one_line(tmp_path: Path, run_cli) -> None:
    """T5 is in the registry but has no causal LM: ``--metric forward`` says so, ``auto`` falls
    back to the weights."""
    config = transformers.AutoConfig.for_model("t5", d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_heads=4, vocab_size=128)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    code, _, err = astuple(run_cli("sensitivity", str(tmp_path / "t5"), "--metric", "forward"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no causal LM" in err
    result = sens.analyze_sensitivity(tmp_path / "t5", kinds="gaussian", samples=1)
    assert result.options.metric is sens.Metric.RESPONSE and "no causal LM" in (result.fallback or "")
