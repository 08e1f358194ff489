"""Hostile input to ``cluster`` and ``predict``: every case is one line on stderr, exit code 2, no
traceback, and nothing waits forever."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys

import pytest

from tensorguard import clustering
from tensorguard.clustering import FamilyClassifier
from tensorguard.fingerprints import load_fingerprints
from tensorguard.reference import bundled_dir, load_labels

PAPER_CENTERS = ",".join(clustering.PAPER_CENTERS)
PHI = bundled_dir() / "phi-4_features.json"
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX feature")


@pytest.fixture(autouse=True)
def no_hang():
    """A command that blocks on a FIFO fails the test after 20 s instead of hanging the suite."""
    if sys.platform == "win32":
        yield
        return

    def stop(*_):
        raise TimeoutError("the command blocked")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("clusters") / "clusters.json"
    FamilyClassifier(centers=clustering.PAPER_CENTERS).fit(
        load_fingerprints([bundled_dir()]), load_labels(bundled_dir() / "labels.csv")).save(path)
    return json.loads(path.read_text())


def _one_line_error(r, *needles):
    assert r.code == 2, (r.out, r.err)
    assert r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    for needle in needles:
        assert needle in r.err, r.err


def test_binary_labels_file(run_cli, tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_bytes(b"model_name,base_model\n\xff\xfe\x00\x81garbage\n")
    _one_line_error(run_cli("cluster", "--centers", PAPER_CENTERS, "--labels", bad),
                    str(bad), "not a UTF-8 text file")
    _one_line_error(run_cli("predict", PHI, "--centers", PAPER_CENTERS, "--labels", bad),
                    str(bad), "not a UTF-8 text file")


def test_labels_with_a_byte_order_mark_are_read(run_cli, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf" + (bundled_dir() / "labels.csv").read_bytes())
    r = run_cli("cluster", "--centers", PAPER_CENTERS, "--labels", labels)
    assert r.code == 0 and "40/43" in r.out


@needs_fifo
@pytest.mark.parametrize("what", ["labels", "clusters", "unknown", "known"])
def test_fifo_is_refused_at_once(run_cli, tmp_path, what):
    fifo = tmp_path / ("x_features.json" if what in ("unknown", "known") else f"{what}.file")
    os.mkfifo(fifo)
    if what == "labels":
        r = run_cli("predict", PHI, "--centers", PAPER_CENTERS, "--labels", fifo)
    elif what == "clusters":
        r = run_cli("predict", PHI, "--clusters", fifo)
    elif what == "unknown":
        r = run_cli("predict", fifo, "--centers", PAPER_CENTERS)
    else:  # a FIFO among the known fingerprints of a folder
        shutil.copy(PHI, tmp_path)
        r = run_cli("cluster", tmp_path, "--centers", "phi-4")
    _one_line_error(r, str(fifo), "not a")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("option", ["--labels", "--clusters"])
def test_device_is_refused(run_cli, option):
    args = ("--centers", PAPER_CENTERS) if option == "--labels" else ()
    _one_line_error(run_cli("predict", PHI, option, "/dev/zero", *args), "/dev/zero: not a regular file")


def test_directory_as_clusters_file(run_cli, tmp_path):
    _one_line_error(run_cli("predict", PHI, "--clusters", tmp_path), str(tmp_path))


def _edit(saved, change):
    data = json.loads(json.dumps(saved))
    change(data)
    return data


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["centers"].append("unsloth-phi-4"), "center 'unsloth-phi-4' is not a center member"),
    (lambda d: d["centers"].__setitem__(0, "nobody"), "center 'nobody' is not a center member"),
    (lambda d: d["clusters"][0]["members"].append("phi-4"), "lists members that are not in it"),
    (lambda d: d["members"][0].__setitem__("cluster", "nowhere"), "in unknown cluster 'nowhere'"),
    (lambda d: d["members"].append(d["members"][0]), "appears twice"),
    (lambda d: d["members"][0].__setitem__("features", [1.0] * 13), "expected 14 finite numbers"),
    (lambda d: d["members"][0].__setitem__("features", [True] * 14), "expected a number"),
    (lambda d: d["thresholds"].pop("neighbors"), "'neighbors'"),
    (lambda d: d["thresholds"].__setitem__("paper", -1), "a threshold is negative"),
    (lambda d: d["scaler_scale"].__setitem__(0, 0), "scaler_scale must be positive"),
    (lambda d: d["members"][0].__setitem__("base_source", "guess"), "'guess' is not a valid BaseSource"),
    (lambda d: d.pop("members"), "'members'"),
    (lambda d: d.__setitem__("centers", []), "no members, clusters or centers"),
    (lambda d: d.__setitem__("schema", "tensorguard.clusters/1"), "written by an older tensorguard"),
    (lambda d: d.__setitem__("schema", "something/9"), "schema 'something/9' is not"),
])
def test_inconsistent_clusters_file(run_cli, tmp_path, saved, change, message):
    bad = tmp_path / "clusters.json"
    bad.write_text(json.dumps(_edit(saved, change)))
    _one_line_error(run_cli("predict", PHI, "--clusters", bad), str(bad), message)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_deeply_nested_clusters_file(run_cli, tmp_path, text):
    bad = tmp_path / "clusters.json"
    bad.write_text(text)
    _one_line_error(run_cli("predict", PHI, "--clusters", bad), str(bad), "nested too deeply")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize("where", ["feature", "threshold", "centroid", "anywhere"])
def test_non_finite_numbers_in_clusters_file(run_cli, tmp_path, saved, number, where):
    marker = 123.25  # a value json writes as-is, swapped for the non-finite text below
    data = _edit(saved, {
        "feature": lambda d: d["members"][3]["features"].__setitem__(5, marker),
        "threshold": lambda d: d["thresholds"].__setitem__("neighbors", marker),
        "centroid": lambda d: d["clusters"][1]["centroid"].__setitem__(0, marker),
        "anywhere": lambda d: d.__setitem__("comment", {"x": [marker]}),
    }[where])
    bad = tmp_path / "clusters.json"
    bad.write_text(json.dumps(data).replace("123.25", number))
    _one_line_error(run_cli("predict", PHI, "--clusters", bad), str(bad), "non-finite number")


def test_endless_integer_in_clusters_file(run_cli, tmp_path, saved):
    bad = tmp_path / "clusters.json"
    bad.write_text(json.dumps(_edit(saved, lambda d: d["thresholds"].__setitem__("paper", 10**400))))
    _one_line_error(run_cli("predict", PHI, "--clusters", bad), str(bad))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_threshold_must_be_a_positive_number(run_cli, value):
    _one_line_error(run_cli("predict", bundled_dir() / "MARS-v0.2_features.json", "--centers", PAPER_CENTERS,
                            "--threshold", value),
                    f"--threshold {value}", "must be a positive number")
