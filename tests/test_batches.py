"""Batches of models: ``--from FILE``, the progress tally, failures that do not stop the batch,
resuming an interrupted batch, batched commits that keep every finished model on Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineage_models import base_weights, save
from tensorguard import progress
from tensorguard.app.batch import Status, model_list
from tensorguard.app.executors import DaskExecutor, make_executor
from tensorguard.app.index import add_models
from tensorguard.catalogue import Catalogue
from tensorguard.errors import TensorguardError

FAST = {"samples": 2, "device": "cpu"}
CLI_FAST = ("--samples", "2", "--device", "cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("batch")
    return [save(root / f"m{seed}", base_weights(seed)) for seed in range(4)]


def test_model_list_reads_arguments_then_the_file(tmp_path):
    listed = tmp_path / "models.txt"
    listed.write_text("# today's uploads\n./a\n\n  ./b  \n#./c\n")
    assert model_list(["./z"], listed) == ["./z", "./a", "./b"]
    with pytest.raises(TensorguardError, match="at least one model"):
        model_list([], None)
    with pytest.raises(TensorguardError, match="no such file"):
        model_list([], tmp_path / "missing.txt")


def test_the_tally_counts_outcomes(models, tmp_path, capsys):
    progress.configure(True)  # the bar on a non-terminal stderr
    try:
        add_models(Catalogue(tmp_path / "cat.sqlite"), [str(models[0]), str(tmp_path / "missing")], **FAST)
    finally:
        progress.configure(None)
    err = capsys.readouterr().err
    assert "1/2" in err and "written=1, remaining=1" in err
    assert "2/2" in err and "failed=1, remaining=0" in err
    assert "model/s" in err or "s/model" in err  # throughput


def test_from_file_with_a_failure(models, tmp_path, run_cli):
    listed = tmp_path / "models.txt"
    listed.write_text("\n".join(map(str, [models[0], tmp_path / "missing", models[1]])) + "\n")
    db = tmp_path / "cat.sqlite"
    result = run_cli("index", "add", "--from", listed, "--db", db, *CLI_FAST)
    assert result.code == 1  # one model failed: the others were added
    assert result.err.endswith("missing: no such file or directory\n")
    assert result.out.splitlines()[-1] == "3 models: 2 added, 0 already in the catalogue (skipped), 1 failed"
    names = [e.name for e in Catalogue(db, builtin=False).entries()]
    assert names == ["m0", "m1"]
    again = run_cli("index", "add", "--from", listed, models[2], "--db", db, "--json", "-q", *CLI_FAST)
    assert again.code == 1 and [e["name"] for e in json.loads(again.out)] == ["m2"]  # m0, m1 skipped


def test_an_interrupted_batch_keeps_what_finished_and_resumes(models, tmp_path):
    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    seen: list[str] = []

    def interrupt_after_two(outcome):
        seen.append(outcome.model)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_models(cat, [str(m) for m in models], commit_every=10, on_outcome=interrupt_after_two, **FAST)
    assert [e.name for e in cat.entries()] == ["m0", "m1"]  # measured, not yet due: committed on Ctrl-C
    outcomes = add_models(cat, [str(m) for m in models], commit_every=1, **FAST)
    assert [o.status for o in outcomes] == [Status.SKIPPED, Status.SKIPPED, Status.WRITTEN, Status.WRITTEN]
    assert [e.name for e in cat.entries()] == ["m0", "m1", "m2", "m3"]


def test_rows_are_committed_in_batches(models, tmp_path):
    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    sizes: list[int] = []
    outcomes = add_models(cat, [str(m) for m in models[:3]], commit_every=2,
                          on_outcome=lambda o: sizes.append(len(cat.entries())), **FAST)
    assert [o.status for o in outcomes] == [Status.WRITTEN] * 3
    assert sizes == [0, 0, 2]  # the first two committed together, once both were measured
    assert len(cat.entries()) == 3


def test_a_name_given_twice_in_a_batch_fails_the_second(models, tmp_path):
    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    outcomes = add_models(cat, [str(models[0]), str(models[0])], **FAST)
    assert [o.status for o in outcomes] == [Status.WRITTEN, Status.FAILED]
    assert "also the name of" in (outcomes[1].error or "")


def test_executor_options():
    assert type(make_executor()).__name__ == "LocalExecutor"
    with pytest.raises(TensorguardError, match="one of workers= and scheduler="):
        DaskExecutor(workers=2, scheduler="tcp://127.0.0.1:1")


def test_missing_extra_is_one_line(monkeypatch, run_cli, models, tmp_path):
    import builtins

    real = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.split(".")[0] in ("distributed", "dask"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    monkeypatch.setattr("importlib.import_module",
                        lambda name, package=None: no_dask(name))
    result = run_cli("index", "add", models[0], "--workers", "2", "--db", tmp_path / "c.sqlite")
    assert result.code == 2
    assert result.err == ("tensorguard: error: --workers and --scheduler run on Dask, which is not "
                          "installed: pip install 'tensorguard[distributed]'\n")


def test_no_model_at_all_is_one_line(run_cli, tmp_path):
    for command in ("index add", "scan"):
        result = run_cli(*command.split(), "--db", tmp_path / "c.sqlite")
        assert result.code == 2
        assert result.err == ("tensorguard: error: name at least one model (as arguments, or one a line "
                              "in --from)\n")
