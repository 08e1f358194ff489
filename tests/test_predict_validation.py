"""Which prediction rule to trust: leave-one-out on the bundled set, whole families held out, and the
neighbors rule's unknown threshold against a plain re-statement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from tensorguard import clustering
from tensorguard.clustering import FamilyClassifier, Rule, validate
from tensorguard.clustering.rules import far_out_fence, held_out_sibling_distances
from tensorguard.reference import bundled_dir

PAPER_CENTERS = list(clustering.PAPER_CENTERS)


@pytest.fixture(scope="module")
def model(bundled, labels):
    return FamilyClassifier(centers=PAPER_CENTERS).fit(bundled, labels)


@pytest.fixture(scope="module")
def validation(model):
    return validate(model)


def test_leave_one_out_on_the_bundled_set(validation):
    """The figures of docs/families.md: each of the 35 non-center models held out, the rest refitted."""
    scores = {s.rule: s for s in validation.leave_one_out}
    assert (validation.evaluated, validation.truth_from_labels) == (35, 35)
    assert scores[Rule.NEIGHBORS].right >= 34  # the bar
    assert [(s.rule, s.right, s.unknown) for s in validation.leave_one_out] == [
        (Rule.NEIGHBORS, 35, 0), (Rule.PAPER, 32, 1), (Rule.CENTROID, 34, 1)]
    assert {(m.model, m.answer) for m in scores[Rule.PAPER].misses} == {
        ("Qwen2.5-3B-Instruct", "unknown"), ("open-thoughts_OpenThinker2-7B", "Llama-3.1-8B"),
        ("unsloth_Qwen2.5-7B-Instruct", "Llama-3.2-3B")}
    assert [(m.model, m.answer) for m in scores[Rule.CENTROID].misses] == [("Qwen2.5-3B-Instruct", "unknown")]


def test_leave_one_out_is_what_a_held_out_prediction_says(bundled, labels, validation):
    """One row of the table, redone by hand: fit without the model, predict it."""
    held = next(f for f in bundled if f.model_name == "open-thoughts_OpenThinker2-7B")
    rest = FamilyClassifier(centers=PAPER_CENTERS, rule="paper").fit(
        [f for f in bundled if f is not held], labels)
    assert rest.predict([held])[0].verdict == "Llama-3.1-8B"
    assert rest.set_params(rule="neighbors").predict([held])[0].verdict == "Qwen2.5-7B-Instruct"


def test_whole_families_held_out(validation):
    """Gemma is far from every other family; Llama, Mistral and Phi models are as close to another
    family's models as known models are to their own base's: the 14 features do not separate them."""
    rows = {f.family: f for f in validation.families}
    assert {n: (len(f.models), f.unknown[Rule.NEIGHBORS]) for n, f in rows.items()} == {
        "Gemma": (5, 5), "Llama": (18, 0), "Mistral": (5, 0), "Phi": (5, 0), "Qwen": (10, 2)}
    assert all(f.unknown[Rule.PAPER] == 5 and f.unknown[Rule.CENTROID] == 5 for f in [rows["Gemma"]])
    siblings = np.array(validation.sibling_distances)
    for name in ("Llama", "Mistral", "Phi"):
        d = np.array(rows[name].nearest_known)
        assert d.max() < rows[name].threshold and d.max() < siblings.max()
        assert np.median(d) < np.quantile(siblings, 0.95)
    assert min(rows["Gemma"].nearest_known) > rows["Gemma"].threshold


def test_neighbors_threshold_restated_plainly(bundled, labels, model):
    """Each known model held out: StandardScaler over the others, distance to the nearest model of
    its base; the threshold is Tukey's far-out fence Q3 + 3 IQR of those distances."""
    X = np.array([f.vector() for f in bundled])
    bases = [labels[f.model_name].base_model for f in bundled]
    plain = []
    for i, base in enumerate(bases):
        rest = [j for j in range(len(bases)) if j != i]
        siblings = [j for j in rest if bases[j] == base]
        scaler = StandardScaler().fit(X[rest])
        plain.append(np.linalg.norm(scaler.transform(X[siblings]) - scaler.transform(X[[i]]), axis=1).min())
    assert held_out_sibling_distances(X, bases) == pytest.approx(plain, abs=1e-9)
    q1, q3 = np.percentile(plain, [25, 75])
    assert model.thresholds_[Rule.NEIGHBORS] == pytest.approx(q3 + 3 * (q3 - q1), abs=1e-9)
    assert far_out_fence(np.array([])) == 0.0


def test_validation_of_a_loaded_classifier_is_the_same(tmp_path, model, validation):
    loaded = FamilyClassifier.load(model.save(tmp_path / "clusters.json"))
    assert validate(loaded) == validation


def test_without_labels_the_truth_is_the_clustering(bundled):
    v = validate(FamilyClassifier(centers=PAPER_CENTERS).fit(bundled))
    assert v.truth_from_labels == 0 and v.families == ()
    assert [s.right for s in v.leave_one_out] == [35, 32, 34]


def test_cli_evaluate(run_cli):
    args = ("predict", "--evaluate", "--centers", ",".join(PAPER_CENTERS), "--labels",
            bundled_dir() / "labels.csv")
    r = run_cli(*args)
    assert r.code == 0, r.err
    assert "each of the 35 non-center known models held out" in r.out
    lines = r.out.splitlines()
    assert any(line.split()[:4] == ["neighbors", "35", "35", "0"] for line in lines)
    assert any(line.split()[:4] == ["paper", "32", "35", "1"] for line in lines)
    assert any(line.split()[:5] == ["Gemma", "5", "5", "5", "5"] for line in lines)
    out = json.loads(run_cli(*args, "--json").out)
    assert out["predictions"] == [] and out["validation"]["leave_one_out"][0]["right"] == 35
    assert out["validation"]["families"][0]["unknown"] == {"neighbors": 5, "paper": 5, "centroid": 5}
