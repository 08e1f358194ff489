"""``tensorguard cluster``: the maths against scikit-learn, the bundled accuracy, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from tensorguard import clustering, clustermodel
from tensorguard.errors import TensorguardError
from tensorguard.features import FEATURE_KEYS, load_fingerprints
from tensorguard.reference import Label, bundled_dir, load_labels

PAPER_CENTERS = list(clustermodel.PAPER_CENTERS)
QWEN_3B_DERIVATIVES = {"Qwen2.5-3B-Instruct", "authormist_authormist-originality",
                       "unsloth-Qwen2.5-3B-Instruct"}


@pytest.fixture(scope="module")
def bundled():
    return load_fingerprints([bundled_dir()])


@pytest.fixture(scope="module")
def labels():
    return load_labels(bundled_dir() / "labels.csv")


@pytest.fixture(scope="module")
def raw(bundled):
    """The bundled set as the paper's pipeline sees it: the 14 features read straight from JSON."""
    rows = [json.loads(fp.path.read_text()) for fp in bundled]
    return [r["model_name"] for r in rows], np.array([[r[k] for k in FEATURE_KEYS] for r in rows])


def test_scaler_matches_sklearn(raw):
    _, X = raw
    X = np.hstack([X, np.full((len(X), 1), 10.0)])  # a constant column divides by one, as in sklearn
    assert np.allclose(clustering.Scaler.fit(X).transform(X), StandardScaler().fit_transform(X),
                       rtol=1e-12, atol=1e-12)


def test_kmeans_matches_sklearn_started_at_the_centers(raw, bundled):
    names, X = raw
    Z = StandardScaler().fit_transform(X)
    init = Z[[names.index(c) for c in PAPER_CENTERS]]
    ref = KMeans(len(init), init=init, n_init=1, tol=0, max_iter=300).fit(Z)
    labels, centroids, _ = clustering.lloyd(Z, init)
    assert np.array_equal(labels, ref.labels_)
    assert np.allclose(centroids, ref.cluster_centers_, atol=1e-10)
    model = clustermodel.fit(bundled, PAPER_CENTERS)
    # the same partition and centroids through the fingerprint-level API
    by_name = {m.name: m.cluster for m in model.members}
    groups = {frozenset(n for n, lab in zip(names, ref.labels_) if lab == c) for c in set(ref.labels_)}
    assert groups == {frozenset(c.members) for c in model.clusters}
    assert {by_name[n] for n in names} == {c.name for c in model.clusters}
    ref_centroids = {frozenset(n for n, lab in zip(names, ref.labels_) if lab == c): ref.cluster_centers_[c]
                     for c in set(ref.labels_)}
    for c in model.clusters:
        assert np.allclose(c.centroid, ref_centroids[frozenset(c.members)], atol=1e-10)


def test_silhouette_matches_sklearn(raw, bundled):
    _, X = raw
    Z = StandardScaler().fit_transform(X)
    labels = clustering.lloyd(Z, Z[:5])[0]
    assert clustering.silhouette(Z, labels) == pytest.approx(silhouette_score(Z, labels), abs=1e-12)
    assert clustering.silhouette(Z, np.zeros(len(Z), int)) is None
    model = clustermodel.fit(bundled, PAPER_CENTERS)
    vectors = model.member_vectors()
    assigned = [m.cluster for m in model.members]
    assert model.silhouette == pytest.approx(silhouette_score(vectors, assigned), abs=1e-12)


def test_bundled_accuracy_with_the_paper_centers(bundled, labels):
    """The paper reports about 93%: 40 of the 43 published models land with their base model."""
    model = clustermodel.fit(bundled, PAPER_CENTERS)
    ev = clustermodel.evaluate(model, labels)
    assert (ev.correct, ev.evaluated) == (40, 43)
    assert ev.accuracy == pytest.approx(40 / 43) and ev.accuracy >= 0.93
    assert ev.purity == pytest.approx(41 / 43)
    assert {m.model for m in ev.misassigned} == QWEN_3B_DERIVATIVES
    # Qwen2.5-3B shares a cluster with llama-3.2-1b: reported as such, not merged away
    names = [c.name for c in model.clusters]
    assert "llama-3.2-1b+Qwen2.5-3B" in names and "cluster-6" in names
    assert len(names) == 8


def test_gmm_started_from_kmeans(bundled, labels):
    model = clustermodel.fit(bundled, PAPER_CENTERS, method="gmm")
    ev = clustermodel.evaluate(model, labels)
    assert (ev.correct, ev.evaluated) == (42, 43)
    assert clustermodel.fit(bundled, PAPER_CENTERS, method="gmm") == model  # deterministic


def test_extra_clusters_are_seeded_deterministically(bundled, labels):
    a = clustermodel.fit(bundled, PAPER_CENTERS, k=10)
    assert a == clustermodel.fit(bundled, PAPER_CENTERS, k=10)
    assert len(a.clusters) == 10
    assert {c.name for c in a.clusters} >= set(PAPER_CENTERS) | {"cluster-8", "cluster-9"}
    Z = a.member_vectors()
    seeds = clustering.seed_centroids(Z, [0, 1], 4, random_state=3)
    assert np.array_equal(seeds[:2], Z[:2])
    assert np.array_equal(seeds, clustering.seed_centroids(Z, [0, 1], 4, random_state=3))
    assert all(any(np.array_equal(s, z) for z in Z) for s in seeds[2:])  # k-means++ picks data points


def test_naming_and_threshold_rule():
    labels = np.array([0, 0, 1, 2])
    assert clustering.name_clusters(labels, [0, 1, 2], ["a", "b", "c", "d"], 3) == ["a+b", "c", "cluster-2"]
    d = np.array([0.5, 2.0, 1.0])
    assert clustering.default_threshold(d) == pytest.approx(clustering.THRESHOLD_MARGIN * 2.0)
    assert np.all(d <= clustering.default_threshold(d))
    with pytest.raises(TensorguardError):
        clustering.default_threshold(np.array([]))


def test_model_threshold_covers_every_member(bundled):
    model = clustermodel.fit(bundled, PAPER_CENTERS)
    largest = max(m.distance for m in model.members)
    assert model.threshold == pytest.approx(1.25 * largest)
    assert all(p.verdict != clustering.UNKNOWN for p in clustermodel.predict(model, bundled))


def test_evaluate_scores_and_purity():
    ev = clustering.evaluate({"a": "X", "b": "X", "c": "Y", "d": "Y", "e": "Z"},
                             {"a": "X", "b": "X", "c": "X", "d": "Y", "e": None},
                             {"a": "A", "b": "A", "c": "A", "d": "D", "e": "E"})
    assert (ev.evaluated, ev.correct) == (4, 3)
    assert ev.purity == 0.75  # X holds bases {A, A}, Y holds {A, D}: majorities 2 + 1 of 4
    assert [m.model for m in ev.misassigned] == ["c"]
    assert ev.unlabelled == ("e",)


def test_extra_keys_do_not_change_results(tmp_path, bundled):
    for fp in bundled:
        data = json.loads(fp.path.read_text())
        data.update(num_layers=99, total_params=1, extra_numeric=123.0)
        (tmp_path / fp.path.name).write_text(json.dumps(data))
    changed = load_fingerprints([tmp_path])
    assert clustermodel.fit(changed, PAPER_CENTERS) == clustermodel.fit(bundled, PAPER_CENTERS)


def test_cli_cluster_text_json_save_and_plot(run_cli, tmp_path):
    centers = ",".join(PAPER_CENTERS)
    save, plot = tmp_path / "clusters.json", tmp_path / "c.png"
    r = run_cli("cluster", bundled_dir(), "--centers", centers, "--labels", bundled_dir() / "labels.csv",
                "--save", save, "--plot", plot)
    assert r.code == 0, r.err
    assert "40/43" in r.out and "accuracy 93.0%" in r.out and "[holds 2 centers]" in r.out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = save.read_bytes()
    assert json.loads(first)["schema"] == "tensorguard.clusters/1"
    r = run_cli("cluster", "--centers", centers, "--save", save, "--no-plot")  # default: bundled set
    assert r.code == 2 and "already exists" in r.err and "--force" in r.err
    r = run_cli("cluster", "--centers", centers, "--save", save, "--no-plot", "--force", "--json")
    assert r.code == 0
    assert save.read_bytes() == first  # byte-identical on every run
    out = json.loads(r.out)
    assert out["evaluation"] is None and len(out["model"]["clusters"]) == 8
    assert out["model"]["members"][0]["distance"] >= 0


def _err(run_cli, *args):
    r = run_cli("cluster", *args, "--no-plot")
    assert r.code == 2, r.out
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    return r.err


def test_cli_bad_centers(run_cli, tmp_path):
    err = _err(run_cli, bundled_dir(), "--centers", "Lama-3.1-8b")
    assert "'Lama-3.1-8b' matches no fingerprint" in err and "closest: Llama-3.1-8B" in err
    assert "named twice" in _err(run_cli, bundled_dir(), "--centers", "phi-4,phi-4")
    assert "at least one" in _err(run_cli, bundled_dir(), "--centers", ",")
    assert "fewer than the 2" in _err(run_cli, bundled_dir(), "--centers", "phi-4,Qwen2.5-3B", "--k", "1")
    assert "2 fingerprint(s) cannot make 3 clusters" in _err(
        run_cli, bundled_dir() / "phi-4_features.json", bundled_dir() / "Qwen2.5-3B_features.json",
        "--centers", "phi-4", "--k", "3")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("ffn_norm"), "lacks feature(s) ffn_norm"),
    (lambda d: d.update(ffn_norm=float("nan")), "'ffn_norm' is nan"),
    (lambda d: d.update(ffn_norm=float("inf")), "'ffn_norm' is inf"),
    (lambda d: d.clear(), "not a fingerprint"),
    (lambda d: d.update(model_name="phi-4"), "duplicate model name 'phi-4'"),
])
def test_cli_bad_fingerprints(run_cli, tmp_path, edit, message):
    shutil.copy(bundled_dir() / "phi-4_features.json", tmp_path)
    data = json.loads((bundled_dir() / "Qwen2.5-3B_features.json").read_text())
    edit(data)
    bad = tmp_path / "bad_features.json"
    bad.write_text(json.dumps(data))
    err = _err(run_cli, tmp_path, "--centers", "phi-4")
    assert message in err and "bad_features.json" in err


def test_cli_empty_dir_and_bad_labels(run_cli, tmp_path):
    assert "no *_features.json" in _err(run_cli, tmp_path, "--centers", "phi-4")
    (tmp_path / "labels.csv").write_text("name,base\nx,y\n")
    assert "labels need columns" in _err(run_cli, bundled_dir(), "--centers", "phi-4", "--labels",
                                         tmp_path / "labels.csv")


def test_labels_missing_models_are_not_scored(bundled):
    model = clustermodel.fit(bundled, PAPER_CENTERS)
    ev = clustermodel.evaluate(model, {"phi-4": Label("phi-4"), "unsloth-phi-4": Label("not-here")})
    assert (ev.evaluated, ev.correct) == (1, 1)
    assert len(ev.unlabelled) == 42
