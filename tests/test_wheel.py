"""What users install: the wheel, in a fresh virtual environment, run from an empty folder.

Opt-in (``pytest -m wheel``; ``make test`` runs it after the unit tests): it builds the wheel and
the sdist, lists what they carry, installs the wheel with its dependencies into a new virtual
environment outside the checkout (``$TENSORGUARD_TEST_TORCH``, default ``torch==2.13.0``, is
installed first so that pip takes that build of torch), and runs the README's tour from an empty
temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER_CENTERS = ("gemma-3-4b-it,Llama-3.1-8B,llama-3.2-1b,Llama-3.2-3B,Mistral-7B-v0.1,phi-4,"
                 "Qwen2.5-3B,Qwen2.5-7B-Instruct")
pytestmark = pytest.mark.wheel


def _run(*argv: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False,
                          env=env, timeout=900)
    assert done.returncode == 0, (f"{argv}: exit {done.returncode}\n{done.stdout[-2000:]}\n"
                                  f"{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=out)
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", home / "env", cwd=home)
    pip = [home / "env" / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(*pip, os.environ.get("TENSORGUARD_TEST_TORCH", "torch==2.13.0"), cwd=home)
    _run(*pip, next(dist.glob("*.whl")), cwd=home)
    return home / "env" / "bin"


def test_the_wheel_carries_the_package_and_its_data_and_nothing_else(dist: Path) -> None:
    names = zipfile.ZipFile(next(dist.glob("*.whl"))).namelist()
    features = [n for n in names if n.startswith("tensorguard/features/") and n.endswith("_features.json")]
    assert len(features) == len(list((ROOT / "features").glob("*_features.json"))) == 43
    assert {"tensorguard/features/labels.csv", "tensorguard/features/README.md", "tensorguard/py.typed",
            "tensorguard/cli/__init__.py"} <= set(names)
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "docs", "features")]
    with tarfile.open(next(dist.glob("*.tar.gz"))) as archive:
        sdist = archive.getnames()
    assert any(n.endswith("/features/labels.csv") for n in sdist)
    assert any(n.endswith("/LICENSE") for n in sdist) and any(n.endswith("/NOTICE") for n in sdist)


def test_metadata_is_complete(venv: Path, tmp_path: Path) -> None:
    code = ("import importlib.metadata as m, json; d = m.metadata('tensorguard');"
            "print(json.dumps({k: d.get_all(k) for k in ('Version', 'License-Expression', "
            "'Requires-Python', 'Classifier', 'Project-URL', 'License-File')}))")
    meta = json.loads(_run(venv / "python", "-c", code, cwd=tmp_path).stdout)
    assert meta["License-Expression"] == ["Apache-2.0"] and meta["Requires-Python"] == [">=3.10"]
    assert set(meta["License-File"]) == {"LICENSE", "NOTICE"}
    assert len(meta["Classifier"]) >= 8 and meta["Project-URL"]
    version = _run(venv / "tensorguard", "--version", cwd=tmp_path).stdout
    assert version.strip() == f"tensorguard, version {meta['Version'][0]}"


def test_the_tour_runs_from_an_empty_folder(venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "TENSORGUARD_CATALOGUE": str(tmp_path / "catalogue.sqlite"),
           "OMP_NUM_THREADS": "1"}
    tg = venv / "tensorguard"

    def run(*args: object) -> str:
        return _run(tg, *args, cwd=work, env=env).stdout

    assert "clustered" in run("demo", "--plot", tmp_path / "imgs", "-q").lower()
    builtin = json.loads(run("index", "list", "--json"))
    assert len(builtin) == 43 and {e["origin"] for e in builtin} == {"builtin"}
    clusters = json.loads(run("cluster", "--centers", PAPER_CENTERS, "--json"))
    assert clusters["evaluation"]["correct"] == 40 and clusters["plot"] is None
    make = ("import sys; from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model;"
            "w = make_weights(ModelSpec(layers=4, hidden=64, intermediate=128, vocab=256), 0);"
            "save_model(w, sys.argv[1]); save_model(finetune(w, 0.02, seed=1), sys.argv[2])")
    _run(venv / "python", "-c", make, tmp_path / "base", tmp_path / "tuned", cwd=work)
    verdict = json.loads(run("compare", tmp_path / "base", tmp_path / "tuned", "--json"))
    assert verdict["verdict"]["label"] == "derived"
    run("index", "add", tmp_path / "base", "--name", "base", "--label", "licence=restricted", "-q")
    scanned = json.loads(run("scan", tmp_path / "tuned", "--json", "-q"))
    assert scanned["base"] == "base" and scanned["answer"] == "derived"
    assert list(work.iterdir()) == []  # no command wrote into the working folder
