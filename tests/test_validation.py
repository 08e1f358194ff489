"""One validation module: whole numbers, finite numbers, choices; and the bugs it closed."""

from __future__ import annotations

import json

import pytest

import tensorguard
from tensorguard.clustering import Method
from tensorguard.errors import OptionError
from tensorguard.reference import bundled_dir
from tensorguard.validation import choice_option, finite, finite_option, is_whole, whole_option


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1.0), (2.5, 2.5), (10**300, 1e300), (10**400, None), (float("inf"), None), (float("nan"), None),
    (True, None), ("1", None), (None, None)])
def test_finite(value, expected):
    assert finite(value) == expected


def test_whole_numbers_are_integers_not_booleans_or_floats():
    assert is_whole(3) and is_whole(0) and not is_whole(0, 1)
    assert not is_whole(True) and not is_whole(4.0) and not is_whole("4")
    assert whole_option("top", 0, least=0) == 0
    with pytest.raises(OptionError, match=r"samples=True: must be a whole number of at least 1"):
        whole_option("samples", True)


def test_option_errors_read_in_library_and_cli_terms():
    with pytest.raises(OptionError) as caught:
        finite_option("threshold", 10**400, positive=True)
    assert caught.value.for_cli({}).startswith("--threshold 1000") and "positive" in str(caught.value)
    assert choice_option(Method, "method", "gmm") is Method.GMM
    with pytest.raises(OptionError, match="choose one of kmeans, gmm"):
        choice_option(Method, "method", "dbscan")


def test_a_fingerprint_holding_a_huge_integer_is_bad_input_not_a_crash(tmp_path, run_cli):
    data = json.loads((bundled_dir() / "phi-4_features.json").read_text())
    data["global_mean"] = 10**400
    path = tmp_path / "huge_features.json"
    path.write_text(json.dumps(data))
    r = run_cli("compare", path, bundled_dir() / "phi-4_features.json")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert "global_mean" in r.err and "not a finite number" in r.err


@pytest.mark.parametrize("bad", [{"samples": 0}, {"samples": True}, {"top": 2.0}, {"threshold": float("nan")},
                                 {"metric": "loud"}])
def test_sensitivity_options_are_checked_by_the_library(tmp_path, bad):
    from tensorguard.synthetic import ModelSpec, make_weights, save_model

    model = save_model(make_weights(ModelSpec(layers=1, hidden=16, intermediate=32, vocab=32), 0),
                       tmp_path / "m.safetensors")
    with pytest.raises(OptionError):
        tensorguard.analyze_sensitivity(model, **bad)


def test_sensitivity_samples_has_a_range_on_the_command_line(run_cli, tmp_path):
    r = run_cli("sensitivity", tmp_path / "missing", "--samples", "0")
    assert r.code == 2 and "--samples" in r.err and r.err.count("\n") == 1
