"""``tensorguard index`` and ``tensorguard scan`` on the command line: outputs, --db and its
environment variable, the exit-code rule."""

from __future__ import annotations

import json

import pytest

from lineage_models import base_weights, rename, save
from tensorguard.synthetic import finetune

FAST = ("--samples", "2", "--device", "cpu", "-q")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    alpha = base_weights(0)
    return {"alpha": save(root / "alpha", alpha), "beta": save(root / "beta", base_weights(1)),
            "suspect": save(root / "suspect", rename(finetune(alpha, 0.2, seed=3), 5))}


def test_index_round_trip_and_scan_exit_codes(models, tmp_path, run_cli, monkeypatch):
    db = tmp_path / "cat.sqlite"
    added = run_cli("index", "add", models["alpha"], "--label", "base=alpha,licence=restricted",
                    "--db", db, "--json", *FAST)
    assert added.code == 0, added.err
    assert [e["name"] for e in json.loads(added.out)] == ["alpha"]
    again = run_cli("index", "add", models["alpha"], "--db", db, *FAST)
    assert again.code == 0 and again.out.endswith("same header hash (skipped)\n")  # resumable
    other = run_cli("index", "add", models["beta"], "--name", "alpha", "--db", db, *FAST)
    assert other.code == 2 and "--replace" in other.err  # other weights: refused before the slow part
    monkeypatch.setenv("TENSORGUARD_CATALOGUE", str(db))  # --db's default
    listed = json.loads(run_cli("index", "list", "--no-builtin", "--json").out)
    assert [(e["name"], e["origin"], e["labels"]["licence"]) for e in listed] == [
        ("alpha", "model", "restricted")]
    shown = run_cli("index", "show", "alpha")
    assert shown.code == 0 and "licence=restricted" in shown.out and "signature" in shown.out

    scanned = run_cli("scan", models["suspect"], "--json", "--policy", "licence=restricted", *FAST)
    assert scanned.code == 3  # derived from an entry labelled licence=restricted
    result = json.loads(scanned.out)
    assert (result["answer"], result["base"]) == ("derived", "alpha")
    text = run_cli("scan", models["suspect"], *FAST)
    assert text.code == 0 and text.out.startswith("suspect: derived from alpha")  # no --policy
    assert run_cli("scan", models["suspect"], "--policy", "licence=open", *FAST).code == 0
    assert run_cli("scan", models["beta"], "--no-builtin", *FAST).code == 0  # no known base

    both = run_cli("scan", models["beta"], tmp_path / "missing", "--json", "--no-builtin", *FAST)
    assert both.code == 1 and "missing" in both.err  # one model failed, the other was scanned
    assert [r["answer"] for r in json.loads(both.out)] == ["no known base"]

    assert run_cli("index", "remove", "alpha").code == 0
    assert run_cli("index", "remove", "alpha").code == 2


@pytest.mark.parametrize(("args", "message"), [
    (("index", "add", "MODEL", "--label", "base"), "--label base: 'base': expected key=value"),
    (("index", "list", "--db", "TMP"), "is a directory, not a catalogue file (--db names"),
    (("index", "show", "no-such-model", "--db", "TMP/x.sqlite"), "'no-such-model' is not in the catalogue"),
    (("index", "remove", "phi-4", "--db", "TMP/x.sqlite"), "built-in entry"),
    (("scan", "MODEL", "--policy", "licence"), "--policy licence: 'licence': expected key=value"),
])
def test_bad_input_is_one_line_exit_2(models, tmp_path, run_cli, args, message):
    argv = [str(models["alpha"]) if a == "MODEL" else a.replace("TMP", str(tmp_path)) for a in args]
    result = run_cli(*argv)
    assert result.code == 2 and message in result.err and result.err.count("\n") == 1, result.err


def test_a_model_that_fails_fails_alone(models, tmp_path, run_cli):
    db = tmp_path / "cat.sqlite"
    result = run_cli("index", "add", models["alpha"], tmp_path / "missing", "--db", db, *FAST)
    assert result.code == 1 and "missing" in result.err
    listed = run_cli("index", "list", "--no-builtin", "--db", db, "--json")
    assert [e["name"] for e in json.loads(listed.out)] == ["alpha"]
