"""Compare signals are a registry: one class plus its registration reaches every output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tensorguard.lineage import SIGNALS, Context, Signal, Subject, compare, compare_all, register
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model


@dataclass(frozen=True)
class ParamRatio:
    """A toy signal: how the two models' parameter counts compare."""

    ratio: float


@pytest.fixture
def extra_signal() -> Iterator[None]:
    @register
    class ParamRatioSignal(Signal):
        name, matrix, title = "param_ratio", "param_ratio", "parameter ratio"
        description, higher_is_closer, diagonal = "smaller / larger parameter count", True, 1.0

        def measure(self, a: Subject, b: Subject, context: Context) -> ParamRatio:
            small, large = sorted([a.fingerprint.total_params, b.fingerprint.total_params])
            return ParamRatio(small / large)

        def value(self, evidence: ParamRatio) -> float:
            return evidence.ratio

    yield
    del SIGNALS["param_ratio"]


def test_a_registered_signal_reaches_json_text_and_matrices(tmp_path: Path, extra_signal: None,
                                                            run_cli) -> None:
    weights = make_weights(ModelSpec(layers=2), 0)
    a = save_model(weights, tmp_path / "a.safetensors")
    b = save_model(finetune(weights, 0.05, 1), tmp_path / "b.safetensors")
    c = save_model(make_weights(ModelSpec(layers=1), 1), tmp_path / "c.safetensors")
    pair = compare(a, b, device="cpu", samples=2)
    assert pair.evidence["param_ratio"] == ParamRatio(1.0)
    assert json.loads(run_cli("compare", a, b, "--json", "--samples", "2").out)["param_ratio"] == {
        "ratio": 1.0}
    assert "param_ratio:" in run_cli("compare", a, b, "--samples", "2").out
    matrix = compare_all([a, b, c], device="cpu", samples=2)
    ratios = next(s for s in matrix.signals if s.signal == "param_ratio")
    assert ratios.values[0][1] == 1.0 and 0 < ratios.values[0][2] < 1
    plots = run_cli("compare", a, b, c, "--samples", "2", "--plot-dir", tmp_path / "imgs")
    assert plots.code == 0 and (tmp_path / "imgs" / "similarity_param_ratio.png").is_file()


def test_the_registry_holds_the_four_signals_in_report_order() -> None:
    assert list(SIGNALS) == ["fingerprint", "weights", "independence", "signature"]
