"""``tensorguard predict``: nearest centroid in the saved space, the unknown verdict, round trips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from tensorguard import clustering
from tensorguard.clustering import FamilyClassifier
from tensorguard.errors import TensorguardError
from tensorguard.fingerprints import load_fingerprints
from tensorguard.reference import Label, bundled_dir

PAPER_CENTERS = list(clustering.PAPER_CENTERS)
HELD_OUT = "MARS-v0.2"


@pytest.fixture(scope="module")
def split():
    fps = load_fingerprints([bundled_dir()])
    return [f for f in fps if f.model_name != HELD_OUT], [f for f in fps if f.model_name == HELD_OUT]


@pytest.fixture(scope="module")
def model(split):
    return FamilyClassifier(centers=PAPER_CENTERS).fit(split[0])


def test_prediction_matches_sklearn(split, model):
    known, unknown = split
    X = np.array([f.vector() for f in known])
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    names = [f.model_name for f in known]
    km = KMeans(8, init=Z[[names.index(c) for c in PAPER_CENTERS]], n_init=1, tol=0).fit(Z)
    z = scaler.transform(np.array([unknown[0].vector()]))
    (p,) = model.predict(unknown)
    assert p.distance == pytest.approx(km.transform(z).min(), abs=1e-9)
    assert sorted(p.cluster_distances.values()) == pytest.approx(sorted(km.transform(z)[0]), abs=1e-9)
    assert p.nearest_cluster == model.members_[int(np.flatnonzero(km.labels_ == km.predict(z)[0])[0])].cluster
    assert p.verdict == "Llama-3.1-8B" and p.distance < p.threshold  # MARS derives from Llama-3.1-8B
    assert set(p.center_distances) == set(PAPER_CENTERS)
    assert p.center_distances["Llama-3.1-8B"] == pytest.approx(
        np.linalg.norm(z[0] - Z[names.index("Llama-3.1-8B")]), abs=1e-9)
    assert [n.distance for n in p.nearest_models] == sorted(n.distance for n in p.nearest_models)
    assert len(p.nearest_models) == 3


def test_save_load_round_trip(tmp_path, model, split):
    path = model.save(tmp_path / "clusters.json")
    loaded = FamilyClassifier.load(path)
    assert loaded.to_dict() == model.to_dict()
    assert loaded.predict(split[1]) == model.predict(split[1])
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_unknown_verdict_and_threshold_override(model, split):
    fp = split[1][0]
    (far,) = model.predict([fp], threshold=1.0)
    assert far.verdict == clustering.UNKNOWN and far.nearest_cluster == "Llama-3.1-8B"
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(TensorguardError, match="must be a positive number"):
            model.predict([fp], threshold=bad)


def test_leave_one_out_with_the_default_threshold():
    """Each non-center model held out in turn: all but the one the clustering itself puts in a
    center-less cluster stay within the threshold derived from the rest."""
    fps = load_fingerprints([bundled_dir()])
    flagged = []
    for fp in fps:
        if fp.model_name in PAPER_CENTERS:
            continue
        model = FamilyClassifier(centers=PAPER_CENTERS).fit([f for f in fps if f is not fp])
        (p,) = model.predict([fp])
        if p.verdict == clustering.UNKNOWN:
            flagged.append(fp.model_name)
    assert flagged == ["Qwen2.5-3B-Instruct"]


def test_cli_round_trip_cluster_save_predict(run_cli, tmp_path):
    save = tmp_path / "clusters.json"
    known = tmp_path / "known"
    shutil.copytree(bundled_dir(), known)
    unknown = tmp_path / f"{HELD_OUT}_features.json"
    shutil.move(known / unknown.name, unknown)
    assert run_cli("cluster", known, "--centers", ",".join(PAPER_CENTERS), "--save", save,
                   "--no-plot").code == 0
    r = run_cli("predict", unknown, "--clusters", save, "--plot-dir", tmp_path, "--json")
    assert r.code == 0, r.err
    saved = json.loads(r.out)
    (p,) = saved["predictions"]
    assert p["verdict"] == "Llama-3.1-8B" and saved["clusters"] == str(save)
    assert (tmp_path / f"unknown_model_prediction_{HELD_OUT}.png").read_bytes()[:4] == b"\x89PNG"
    # fitting here with --centers on the same set gives the same answer
    r = run_cli("predict", unknown, "--centers", ",".join(PAPER_CENTERS), "--features", known,
                "--no-plot", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["predictions"] == saved["predictions"]
    # the default set is the bundled one; the unknown is held out of it automatically
    r = run_cli("predict", bundled_dir() / unknown.name, "--centers", ",".join(PAPER_CENTERS),
                "--no-plot", "--json")
    assert json.loads(r.out)["predictions"] == saved["predictions"]
    r = run_cli("predict", unknown, "--clusters", save, "--plot-dir", tmp_path)
    assert r.code == 2 and "already exists" in r.err


def test_cli_text_report_and_labels(run_cli, tmp_path, model):
    save = model.save(tmp_path / "clusters.json")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"model_name,base_model\n{HELD_OUT},Llama-3.1-8B\nphi-4,phi-4\n")
    r = run_cli("predict", bundled_dir() / f"{HELD_OUT}_features.json", bundled_dir() / "phi-4_features.json",
                "--clusters", save, "--labels", labels, "--no-plot")
    assert r.code == 0, r.err
    assert f"{HELD_OUT}: Llama-3.1-8B (distance" in r.out and "2/2 predictions right" in r.out
    r = run_cli("predict", bundled_dir() / f"{HELD_OUT}_features.json", "--clusters", save,
                "--threshold", "1", "--no-plot", "--labels", labels)
    assert f"{HELD_OUT}: UNKNOWN (nearest cluster Llama-3.1-8B" in r.out and "0/1 predictions" in r.out


def test_labels_with_a_new_base_expect_unknown(model, split):
    preds = model.predict(split[1], threshold=1.0)
    ev = model.evaluate_predictions(preds, {HELD_OUT: Label("some-new-base")})
    assert (ev.evaluated, ev.correct) == (1, 1)


@pytest.mark.parametrize(("content", "message"), [
    ({"schema": "tensorguard.clusters/0"}, "schema 'tensorguard.clusters/0' is not"),
    ({"schema": "tensorguard.clusters/1"}, "not a tensorguard.clusters/1 clusters file"),
    ([1, 2], "schema None is not"),
])
def test_cli_bad_clusters_file(run_cli, tmp_path, content, message):
    bad = tmp_path / "clusters.json"
    bad.write_text(json.dumps(content))
    r = run_cli("predict", bundled_dir() / "phi-4_features.json", "--clusters", bad, "--no-plot")
    assert r.code == 2 and message in r.err and str(bad) in r.err
    assert r.err.count("\n") == 1


def test_cli_needs_exactly_one_source(run_cli, tmp_path):
    fp = bundled_dir() / "phi-4_features.json"
    for args in ((), ("--clusters", tmp_path / "c.json", "--centers", "phi-4")):
        r = run_cli("predict", fp, *args, "--no-plot")
        assert r.code == 2 and "either --clusters or --centers" in r.err
    r = run_cli("predict", fp, "--clusters", tmp_path / "c.json", "--features", bundled_dir(), "--no-plot")
    assert r.code == 2 and "--features is for --centers" in r.err
    r = run_cli("predict", fp, "--clusters", tmp_path / "missing.json", "--no-plot")
    assert r.code == 2 and "missing.json: no such file" in r.err
    r = run_cli("predict", tmp_path / "nope_features.json", "--centers", "phi-4", "--no-plot")
    assert r.code == 2 and "no such file" in r.err


def test_singleton_clusters_need_an_explicit_threshold(split):
    two = split[0][:2]
    model = FamilyClassifier(centers=[f.model_name for f in two]).fit(two)
    assert model.threshold_ == 0 and model.silhouette_ is None
    with pytest.raises(TensorguardError, match="gives none: pass one"):
        model.predict(split[1])
    (p,) = model.predict(split[1], threshold=1e9)
    assert p.verdict == p.nearest_cluster
