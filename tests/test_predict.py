"""``tensorguard predict``: each rule against a plain re-statement, the answers it may give, the
fitted state's round trip through ``clusters.json``, and the command line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.preprocessing import StandardScaler

from tensorguard import clustering
from tensorguard.clustering import UNKNOWN, BaseSource, FamilyClassifier, Rule
from tensorguard.clustering.rules import vote_weights
from tensorguard.errors import TensorguardError
from tensorguard.reference import Label, bundled_dir

PAPER_CENTERS = list(clustering.PAPER_CENTERS)
HELD_OUT = "MARS-v0.2"


@pytest.fixture(scope="module")
def split(bundled):
    return [f for f in bundled if f.model_name != HELD_OUT], [f for f in bundled if f.model_name == HELD_OUT]


@pytest.fixture(scope="module")
def model(split, labels):
    return FamilyClassifier(centers=PAPER_CENTERS).fit(split[0], labels)


def test_paper_rule_restated_plainly(bundled):
    """The paper's predict_unknown_model_cluster written plainly: its features are every numeric key
    of the JSON but total_params (num_layers too), StandardScaler over the known set, euclidean
    distances to the center models, unknown beyond 7; each non-center model held out in turn."""
    rows = {f.model_name: json.loads(f.path.read_text()) for f in bundled}
    first = next(iter(rows.values()))
    feature_names = [k for k, v in first.items() if isinstance(v, (int, float)) and k != "total_params"]
    assert "num_layers" in feature_names and len(feature_names) == 15
    for unknown in bundled:
        if unknown.model_name in PAPER_CENTERS:
            continue
        known = [f for f in bundled if f is not unknown]
        names = [f.model_name for f in known]
        X = np.array([[rows[n].get(k, 0) for k in feature_names] for n in names])
        unknown_values = [rows[unknown.model_name].get(k, 0) for k in feature_names]
        scaler = StandardScaler()
        X_scaled = scaler.fit_transform(X)
        unknown_scaled = scaler.transform(np.array([unknown_values]))
        center_model_distances = {c: euclidean_distances(unknown_scaled, X_scaled[[names.index(c)]])[0][0]
                                  for c in PAPER_CENTERS}
        most_similar = min(center_model_distances, key=center_model_distances.get)
        (p,) = FamilyClassifier(centers=PAPER_CENTERS, rule="paper").fit(known).predict([unknown])
        assert p.base == p.nearest_center.model == most_similar
        assert p.distance == pytest.approx(center_model_distances[most_similar], abs=1e-9)
        assert p.verdict == (UNKNOWN if center_model_distances[most_similar] > 7 else most_similar)
        assert p.threshold == 7 and p.confidence is None and p.rule is Rule.PAPER
        assert p.center_distances == pytest.approx(center_model_distances, abs=1e-9)


def test_neighbors_rule_restated_plainly(split, model, labels):
    """A distance-weighted vote (1/d) of the 3 nearest known models, each carrying its labelled base."""
    known, (unknown,) = split
    Z = StandardScaler().fit(np.array([f.vector() for f in known])).transform(
        np.array([f.vector() for f in known + [unknown]]))
    d = np.linalg.norm(Z[:-1] - Z[-1], axis=1)
    nearest = np.argsort(d)[:3]
    votes: dict[str, float] = {}
    for i in nearest:
        base = labels[known[i].model_name].base_model
        votes[base] = votes.get(base, 0.0) + 1 / d[i]
    winner = max(votes, key=votes.get)
    (p,) = model.predict([unknown])
    assert p.rule is Rule.NEIGHBORS and p.base == p.verdict == winner == "Llama-3.1-8B"
    assert p.confidence == pytest.approx(votes[winner] / sum(votes.values()), abs=1e-12)
    assert p.family == "Llama"
    assert [n.model for n in p.neighbors] == [known[i].model_name for i in nearest]
    assert [n.distance for n in p.neighbors] == pytest.approx(d[nearest], abs=1e-9)
    # MARS-v0.2's single nearest model is a Mistral: the vote of three gets it right
    assert p.neighbors[0].base == "Mistral-7B-v0.1" and 0.5 < p.confidence < 1
    own = [i for i, f in enumerate(known) if labels[f.model_name].base_model == winner]
    assert p.distance == pytest.approx(d[own].min(), abs=1e-9) and p.distance < p.threshold
    assert p.nearest_center.model == "Llama-3.1-8B"


def test_vote_weights_give_exact_copies_all_the_weight():
    assert list(vote_weights(np.array([0.0, 1.0, 0.0]))) == [1.0, 0.0, 1.0]
    assert list(vote_weights(np.array([0.5, 2.0]))) == [2.0, 0.5]


def test_every_rule_names_one_base_model_never_a_cluster(bundled):
    """The bundled clustering merges two centers (llama-3.2-1b+Qwen2.5-3B) and leaves cluster-6
    without one; predictions still answer a base model (or unknown)."""
    clf = FamilyClassifier(centers=PAPER_CENTERS).fit(bundled)
    names = {c.name for c in clf.clusters_}
    assert "llama-3.2-1b+Qwen2.5-3B" in names and "cluster-6" in names
    bases = {m.base for m in clf.members_} | {UNKNOWN}
    for rule in Rule:
        preds = clf.set_params(rule=rule).predict(bundled, threshold=100.0)
        assert {p.verdict for p in preds} <= bases
        assert not any("+" in p.verdict or p.verdict.startswith("cluster-") for p in preds)
    merged = {p.model: p for p in clf.set_params(rule="centroid").predict(bundled, threshold=100.0)}
    assert merged["Qwen2.5-3B"].nearest_cluster == "llama-3.2-1b+Qwen2.5-3B"
    assert merged["Qwen2.5-3B"].verdict == "Qwen2.5-3B" and merged["llama-3.2-1b"].verdict == "llama-3.2-1b"
    assert merged["Qwen2.5-3B-Instruct"].nearest_cluster == "cluster-6"
    assert merged["Qwen2.5-3B-Instruct"].verdict == "Qwen2.5-3B"


def test_bases_from_labels_or_from_the_clustering(bundled, labels):
    """Without labels a known model's base is its own name for a center, else its cluster's nearest
    center (the nearest center of all for a cluster that holds none): on the bundled set that
    agrees with every label."""
    inferred = FamilyClassifier(centers=PAPER_CENTERS).fit(bundled)
    assert {m.name: m.base for m in inferred.members_} == {n: lab.base_model for n, lab in labels.items()}
    assert {m.base_source for m in inferred.members_ if m.is_center} == {BaseSource.CENTER}
    assert {m.base_source for m in inferred.members_ if not m.is_center} == {BaseSource.CLUSTER}
    assert inferred.family_of("phi-4") is None
    labelled = FamilyClassifier(centers=PAPER_CENTERS).fit(bundled, {"unsloth-phi-4": Label("x", "X")})
    member = {m.name: m for m in labelled.members_}["unsloth-phi-4"]
    assert (member.base, member.family, member.base_source) == ("x", "X", BaseSource.LABEL)
    assert labelled.family_of("x") == "X"


def test_the_file_keeps_every_parameter_it_was_fitted_with(tmp_path, bundled, labels):
    """predict --clusters FILE --evaluate refits with the saved k and rule, not the defaults."""
    clf = FamilyClassifier(centers=PAPER_CENTERS, k=10, rule="centroid", n_neighbors=5,
                           random_state=3).fit(bundled, labels)
    loaded = FamilyClassifier.load(clf.save(tmp_path / "clusters.json"))
    assert loaded.get_params() == {**clf.get_params(), "centers": tuple(PAPER_CENTERS)}
    assert len(loaded.clusters_) == 10
    assert loaded.to_dict() == clf.to_dict()


def test_save_load_round_trip(tmp_path, model, split):
    path = model.save(tmp_path / "clusters.json")
    loaded = FamilyClassifier.load(path)
    assert loaded.to_dict() == model.to_dict()
    for rule in Rule:
        assert loaded.set_params(rule=rule).predict(split[1]) == model.set_params(rule=rule).predict(split[1])
    model.set_params(rule="neighbors")
    loaded.set_params(rule="neighbors")
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    saved = json.loads(path.read_text())
    assert saved["schema"] == clustering.SCHEMA == "tensorguard.clusters/3"
    assert set(saved["thresholds"]) == {"neighbors", "paper", "centroid"}
    assert {"base", "family", "base_source", "features"} <= set(saved["members"][0])


def test_unknown_verdict_and_threshold_override(model, split):
    fp = split[1][0]
    for rule in Rule:
        (far,) = model.set_params(rule=rule).predict([fp], threshold=0.5)
        assert far.verdict == UNKNOWN and far.base == "Llama-3.1-8B" and far.threshold == 0.5
        for bad in (0, -1.0, float("nan"), float("inf")):
            with pytest.raises(TensorguardError, match="must be a positive number"):
                model.predict([fp], threshold=bad)
    model.set_params(rule="neighbors")


def test_parameters(bundled, model):
    with pytest.raises(TensorguardError, match="rule='nearest': choose one of neighbors, paper, centroid"):
        FamilyClassifier(centers=PAPER_CENTERS, rule="nearest").fit(bundled)
    with pytest.raises(TensorguardError, match="n_neighbors=0"):
        FamilyClassifier(centers=PAPER_CENTERS, n_neighbors=0).fit(bundled)
    with pytest.raises(TensorguardError, match="colour='red': not a parameter"):
        model.set_params(colour="red")
    one = FamilyClassifier(centers=PAPER_CENTERS, n_neighbors=1).fit(bundled)
    (p,) = one.predict([f for f in bundled if f.model_name == "phi-4"])
    assert p.confidence == 1.0 and p.verdict == "phi-4" and p.distance == 0


def test_labels_with_a_new_base_expect_unknown(model, split):
    preds = model.predict(split[1], threshold=1.0)
    ev = model.evaluate_predictions(preds, {HELD_OUT: Label("some-new-base")})
    assert (ev.evaluated, ev.correct) == (1, 1)


def test_singleton_sets_need_an_explicit_threshold(split):
    two = split[0][:2]
    model = FamilyClassifier(centers=[f.model_name for f in two]).fit(two)
    assert model.thresholds_[Rule.NEIGHBORS] == model.thresholds_[Rule.CENTROID] == 0
    assert model.silhouette_ is None
    with pytest.raises(TensorguardError, match="no base model is carried by two known models, so "
                                               "the known set gives no neighbors threshold: pass one"):
        model.predict(split[1])
    (p,) = model.predict(split[1], threshold=1e9)
    assert p.verdict == p.base
    assert model.set_params(rule="paper").predict(split[1])[0].threshold == 7


# ---- the command line ---------------------------------------------------------------------------

def _known_and_unknown(tmp_path):
    known = tmp_path / "known"
    shutil.copytree(bundled_dir(), known)
    unknown = tmp_path / f"{HELD_OUT}_features.json"
    shutil.move(known / unknown.name, unknown)
    return known, unknown


def test_cli_round_trip_cluster_save_predict(run_cli, tmp_path):
    save = tmp_path / "clusters.json"
    known, unknown = _known_and_unknown(tmp_path)
    assert run_cli("cluster", known, "--centers", ",".join(PAPER_CENTERS), "--labels",
                   known / "labels.csv", "--save", save).code == 0
    r = run_cli("predict", unknown, "--clusters", save, "--json")
    assert r.code == 0, r.err
    saved = json.loads(r.out)
    (p,) = saved["predictions"]
    assert saved["clusters"] == str(save) and saved["rule"] == "neighbors"
    assert (p["rule"], p["verdict"], p["base"], p["family"]) == ("neighbors", "Llama-3.1-8B",
                                                                 "Llama-3.1-8B", "Llama")
    assert 0 < p["confidence"] < 1 and len(p["neighbors"]) == 3
    assert set(p["neighbors"][0]) == {"model", "base", "cluster", "distance"}
    assert p["nearest_center"]["model"] == "Llama-3.1-8B" and p["distance"] <= p["threshold"]
    # fitting here with --centers on the same set gives the same answer
    r = run_cli("predict", unknown, "--centers", ",".join(PAPER_CENTERS), "--features", known,
                "--labels", known / "labels.csv", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["predictions"] == saved["predictions"]
    # the default set is the bundled one; the unknown is held out of it automatically
    r = run_cli("predict", bundled_dir() / unknown.name, "--centers", ",".join(PAPER_CENTERS),
                "--labels", bundled_dir() / "labels.csv", "--json")
    assert json.loads(r.out)["predictions"] == saved["predictions"]
    r = run_cli("predict", unknown, "--clusters", save, "--rule", "paper", "--json")
    assert json.loads(r.out)["predictions"][0]["confidence"] is None


def test_cli_predict_runs_again_and_draws_only_when_asked(run_cli, tmp_path, model):
    save = model.save(tmp_path / "clusters.json")
    unknown = bundled_dir() / f"{HELD_OUT}_features.json"
    before = sorted(p.name for p in tmp_path.iterdir())
    for _ in range(2):
        r = run_cli("predict", unknown, "--clusters", save)
        assert r.code == 0, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and "Plot:" not in r.out
    figures = tmp_path / "figures"
    r = run_cli("predict", unknown, "--clusters", save, "--plot", figures)
    assert r.code == 0, r.err
    png = figures / f"unknown_model_prediction_{HELD_OUT}.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and f"Plot: {png}" in r.out
    r = run_cli("predict", unknown, "--clusters", save, "--plot", figures)
    assert r.code == 2 and "already exists" in r.err and "--force" in r.err
    assert run_cli("predict", unknown, "--clusters", save, "--plot", figures, "--force").code == 0


def test_cli_text_report_and_labels(run_cli, tmp_path, model):
    save = model.save(tmp_path / "clusters.json")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"model_name,base_model\n{HELD_OUT},Llama-3.1-8B\nphi-4,phi-4\n")
    r = run_cli("predict", bundled_dir() / f"{HELD_OUT}_features.json", bundled_dir() / "phi-4_features.json",
                "--clusters", save, "--labels", labels)
    assert r.code == 0, r.err
    assert f"{HELD_OUT}: Llama-3.1-8B (family Llama; confidence" in r.out and "2/2 predictions right" in r.out
    assert "Rule neighbors: the distance-weighted vote of the 3 nearest known models" in r.out
    assert "nearest known models:" in r.out and "nearest center model: Llama-3.1-8B" in r.out
    r = run_cli("predict", bundled_dir() / f"{HELD_OUT}_features.json", "--clusters", save,
                "--threshold", "1", "--labels", labels)
    assert f"{HELD_OUT}: UNKNOWN (best guess Llama-3.1-8B at" in r.out and "0/1 predictions" in r.out
    assert "exceeds 1 (given)" in r.out


def test_cli_needs_exactly_one_source_and_something_to_do(run_cli, tmp_path):
    fp = bundled_dir() / "phi-4_features.json"
    for args in ((), ("--clusters", tmp_path / "c.json", "--centers", "phi-4")):
        r = run_cli("predict", fp, *args)
        assert r.code == 2 and "either --clusters or --centers" in r.err
    r = run_cli("predict", fp, "--clusters", tmp_path / "c.json", "--features", bundled_dir())
    assert r.code == 2 and "--features is for --centers" in r.err
    r = run_cli("predict", fp, "--clusters", tmp_path / "missing.json")
    assert r.code == 2 and "missing.json: no such file" in r.err
    r = run_cli("predict", tmp_path / "nope_features.json", "--centers", "phi-4")
    assert r.code == 2 and "no such file" in r.err
    r = run_cli("predict", "--centers", "phi-4")
    assert r.code == 2 and "give fingerprint files to predict, or ask for --evaluate" in r.err
