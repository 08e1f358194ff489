"""Fingerprint distance: fixed standardisation, labelled-pair percentiles, fingerprint-only inputs."""

from __future__ import annotations

import json
import shutil
from itertools import combinations

import numpy as np
import pytest

from tensorguard.errors import TensorguardError
from tensorguard.fingerprints import load_fingerprints
from tensorguard.lineage import compare
from tensorguard.lineage.distance import fingerprint_distance, load_reference
from tensorguard.reference import bundled_dir, load_labels


def test_distance_is_standardised_by_the_reference_population():
    ref = load_reference()
    fps = load_fingerprints([bundled_dir()])
    vectors = np.stack([fp.vector() for fp in fps])
    a, b = fps[0], fps[5]
    manual = np.linalg.norm((a.vector() - b.vector()) / vectors.std(axis=0))
    assert ref.models == len(fps) == 43
    assert ref.distance(a, b) == pytest.approx(manual, rel=1e-12)


def test_percentiles_among_labelled_reference_pairs():
    ref = load_reference()
    labels = load_labels(bundled_dir() / "labels.csv")
    fps = {fp.model_name: fp for fp in load_fingerprints([bundled_dir()])}
    same = [(a, b) for a, b in combinations(sorted(fps), 2)
            if labels[a].base_model == labels[b].base_model]
    different = [(a, b) for a, b in combinations(sorted(fps), 2)
                 if labels[a].family != labels[b].family]
    assert ref.same_base.size == len(same) and ref.different_family.size == len(different)
    d = fingerprint_distance(fps["phi-4"], fps["unsloth-phi-4"], ref)
    share = np.mean([ref.distance(fps[a], fps[b]) <= d.distance for a, b in same]) * 100
    assert d.same_base_percentile == pytest.approx(share)
    assert d.different_family_percentile is not None and d.different_family_percentile < 50


def test_fingerprints_only_are_inconclusive():
    c = compare(bundled_dir() / "phi-4_features.json",
                       bundled_dir() / "microsoft_Phi-4-reasoning_features.json")
    assert c.inputs == ("fingerprint", "fingerprint")
    assert c.weights is None and c.independence is None
    assert c.verdict.label == "inconclusive" and c.verdict.p_value is None
    assert "fingerprints only" in c.verdict.reason and "fingerprint distance" in c.verdict.reason


def test_custom_reference_changes_the_scale(tmp_path):
    for name in ("phi-4", "Qwen2.5-3B", "llama-3.2-1b"):
        shutil.copy(bundled_dir() / f"{name}_features.json", tmp_path)
    a = bundled_dir() / "Qwen2.5-3B-Instruct_features.json"
    b = bundled_dir() / "Qwen2.5-3B_features.json"
    default = compare(a, b).fingerprint
    small = compare(a, b, reference=tmp_path).fingerprint
    assert small.reference_models == 3 and small.distance != default.distance
    assert small.same_base_percentile is None  # no labels.csv there


def test_fingerprint_of_another_schema_is_refused(tmp_path):
    data = json.loads((bundled_dir() / "phi-4_features.json").read_text())
    data["schema"] = "somebody-else/2"
    bad = tmp_path / "other_features.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(TensorguardError, match="schema"):
        compare(bad, bundled_dir() / "phi-4_features.json")

