"""``index add`` on Dask: a real ``dask scheduler`` and two ``dask worker`` processes started here
on 127.0.0.1, and a local cluster (``--workers 2``), build the in-process catalogue entry for entry;
a worker killed mid-batch loses nothing; an unreachable scheduler is one line."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lineage_models import base_weights, save
from tensorguard.app import executors
from tensorguard.app.batch import Outcome, Status
from tensorguard.app.executors import DaskExecutor
from tensorguard.app.index import add_models
from tensorguard.catalogue import Catalogue, Store

distributed = pytest.importorskip("distributed")

FAST = {"samples": 2, "device": "cpu"}
MODELS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dask() -> list[str]:
    beside = Path(sys.executable).parent / "dask"
    return [str(beside)] if beside.exists() else [shutil.which("dask") or "dask"]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A scheduler and two workers (one thread each), stopped at the end."""
    logs = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    common = {"stdout": subprocess.DEVNULL, "cwd": logs}
    procs = [subprocess.Popen([*_dask(), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stderr=(logs / "scheduler.log").open("w"), **common)]
    procs += [subprocess.Popen([*_dask(), "worker", address, "--nthreads", "1", "--nworkers", "1",
                                "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}",
                                "--memory-limit", "2GB"], stderr=(logs / f"worker{i}.log").open("w"),
                               **common) for i in range(2)]
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("models")
    return [str(save(root / f"m{seed}", base_weights(seed))) for seed in range(MODELS)]


@pytest.fixture(scope="module")
def in_process(models, tmp_path_factory):
    """The reference: the same batch (and a missing model) measured in this process."""
    cat = Catalogue(tmp_path_factory.mktemp("ref") / "cat.sqlite", builtin=False)
    outcomes = add_models(cat, [*models, "/nonexistent/model"], **FAST)
    return [o.status for o in outcomes], _rows(cat.path)


def _rows(db: Path) -> list:
    """Every row with its signature, the date it was added left out."""
    with Store.open(db) as store:
        return [dataclasses.replace(r, signature=store.signature(r.name), signature_size=None, added_at="")
                for r in store.all()]


def test_an_external_scheduler_builds_the_in_process_catalogue(scheduler, models, in_process, tmp_path):
    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    with DaskExecutor(scheduler=scheduler) as runner:
        outcomes = add_models(cat, [*models, "/nonexistent/model"], executor=runner, commit_every=2, **FAST)
    statuses, rows = in_process
    assert [o.status for o in outcomes] == statuses == [Status.WRITTEN] * MODELS + [Status.FAILED]
    assert "no such file" in (outcomes[-1].error or "")
    assert _rows(cat.path) == rows  # entry for entry
    again = add_models(cat, models, executor=DaskExecutor(scheduler=scheduler), **FAST)
    assert {o.status for o in again} == {Status.SKIPPED}  # resumable on the cluster too


def test_a_local_cluster_from_the_command_line(models, in_process, tmp_path, run_cli):
    db = tmp_path / "cat.sqlite"
    listed = tmp_path / "models.txt"
    listed.write_text("\n".join(models) + "\n")
    result = run_cli("index", "add", "--from", listed, "--workers", "2", "--db", db, "-q",
                     "--samples", "2", "--device", "cpu")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1] == f"{MODELS} models: {MODELS} added, 0 already in the catalogue " \
                                          "(skipped), 0 failed"
    assert _rows(db) == in_process[1]


def test_a_worker_killed_mid_batch_loses_nothing(scheduler, models, in_process, tmp_path):
    cat = Catalogue(tmp_path / "cat.sqlite", builtin=False)
    killed: list[int] = []
    with DaskExecutor(scheduler=scheduler) as runner:

        def kill_a_busy_worker(outcome) -> None:
            if killed:
                return
            busy = [w for w, keys in runner.client.processing().items() if keys]
            pids = runner.client.run(os.getpid, workers=busy[:1])
            for pid in pids.values():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        outcomes = add_models(cat, models, executor=runner, on_outcome=kill_a_busy_worker, **FAST)
        runner.client.wait_for_workers(2, timeout=120)  # its nanny starts a new one
    assert killed and [o.status for o in outcomes] == [Status.WRITTEN] * MODELS
    assert _rows(cat.path) == in_process[1]


def test_an_unreachable_scheduler_is_one_line(models, tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 2)
    address = f"tcp://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)  # --scheduler's default
    start = time.monotonic()
    result = run_cli("index", "add", models[0], "--db", tmp_path / "c.sqlite")
    assert result.code == 2 and time.monotonic() - start < 30
    assert result.err.startswith(f"tensorguard: error: {address}: cannot reach the Dask scheduler (")
    assert result.err.count("\n") == 1
    assert not (tmp_path / "c.sqlite").exists()


def test_a_model_that_crashes_its_workers_fails_after_bounded_tries(scheduler):
    """A task that kills every worker it runs on is recorded as failed (after Dask's
    allowed-failures), the other models are done, and each task runs torch on one thread."""

    def work(model: str) -> Outcome[int]:
        import torch

        if model == "crash":
            os._exit(1)
        return Outcome(model, Status.WRITTEN, result=torch.get_num_threads())

    with DaskExecutor(scheduler=scheduler) as runner:
        found = dict(runner.run(work, ["a", "crash", "b"]))
        runner.client.wait_for_workers(2, timeout=120)
    assert [found[i].status for i in range(3)] == [Status.WRITTEN, Status.FAILED, Status.WRITTEN]
    assert "killed the workers that ran it" in (found[1].error or "")
    assert found[0].result == found[2].result == 1
