"""Faults and bad actors on the way to a remote model: each is retried to the right answer or
refused in one line (exit 2), never a traceback, a wrong number or a leaked token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tensorguard
from remote_support import TOKEN, serving
from tensorguard.errors import TensorguardError
from tensorguard.loading import open_model, remote
from tensorguard.loading.reference import parse_reference
from tensorguard.synthetic import ModelSpec, make_weights, save_model
from tensorguard.testing.hub_server import HubServer

REF = "hf://org/tiny"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(make_weights(ModelSpec(hidden=128, intermediate=256, vocab=512), 0),
                      tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path):
    monkeypatch.setattr(remote, "TIMEOUT_S", 0.5)
    with serving(tmp_path, monkeypatch, stall_s=1.5) as server:
        server.add_repo("org/tiny", model)
        yield server


def read_all(ref: str | Path) -> dict[str, torch.Tensor]:
    with open_model(ref) as source:
        return {name: source.read(name) for name in source.tensors}


def assert_same(ref: str, model: Path) -> None:
    got, want = read_all(ref), read_all(model)
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)


def one_line_error(result, *words: str) -> None:
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1, result.err
    for word in words:
        assert word in result.err, result.err
    assert TOKEN not in result.err + result.out


@pytest.mark.parametrize("fault", ["drop", "500", "503", "429", "short", "stall", "ignore-range"])
def test_transient_faults_are_retried_to_the_right_answer(hub, model, fault) -> None:
    hub.fail(fault, fault)  # the listing is not a file request: both hit file reads
    assert_same(REF, model)
    assert not hub.faults


@pytest.mark.parametrize(("fault", "message"), [
    ("long", "more bytes|-byte body"), ("wrong-range", "answered bytes"),
])
def test_bad_answers_are_refused(hub, run_cli, fault, message) -> None:
    hub.fail(fault)
    result = run_cli("inspect", REF)
    one_line_error(result)
    assert any(m in result.err for m in message.split("|"))


def test_too_many_failures_end_in_one_line(hub, run_cli) -> None:
    hub.fail(*["503"] * remote.TRIES)
    one_line_error(run_cli("inspect", REF), f"failed after {remote.TRIES} tries", "HTTP 503")


def test_a_file_that_changes_between_requests_is_refused_never_mixed(hub, model) -> None:
    with open_model(REF) as source:  # headers fetched, ETag pinned
        name = max(source.tensors, key=lambda n: source.info(n).numel)
        hub.fail("change")
        with pytest.raises(TensorguardError, match="changed while being read"):
            source.read(name)


def test_gated_private_and_missing(hub, model, run_cli, monkeypatch) -> None:
    hub.add_repo("org/gated", model, access="gated")
    hub.add_repo("org/private", model, access="private")
    one_line_error(run_cli("inspect", "hf://org/gated"), "gated repository", "HF_TOKEN")
    one_line_error(run_cli("inspect", "hf://org/private"), "HF_TOKEN")
    one_line_error(run_cli("inspect", "hf://org/none"), "no such repository")
    one_line_error(run_cli("inspect", "hf://org/tiny@nope"), "no such revision")
    one_line_error(run_cli("inspect", "hf://org/tiny/none.safetensors"), "no file or folder")
    one_line_error(run_cli("inspect", f"{hub.url}/files/none.safetensors"), "no such file")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = run_cli("inspect", "hf://org/gated", "-vv")
    assert result.code == 0 and TOKEN not in result.out + result.err


def test_stored_login_token_is_used(hub, model, tmp_path, monkeypatch) -> None:
    hub.add_repo("org/private", model, access="private")
    (tmp_path / "hf-home").mkdir(exist_ok=True)
    (tmp_path / "hf-home" / "token").write_text(TOKEN + "\n")
    assert_same("hf://org/private", model)


def test_the_token_is_never_sent_to_another_host(hub, model, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer() as cdn:
        hub.add_repo("org/cdn", model, redirect=cdn)
        assert_same("hf://org/cdn", model)
        assert cdn.counters.body_bytes > 0 and cdn.counters.authorized == []
        assert hub.counters.authorized  # the Hub itself gets it


def test_timeouts_and_a_dead_server_are_one_line(hub, run_cli, monkeypatch) -> None:
    hub.fail(*["stall"] * remote.TRIES)
    one_line_error(run_cli("inspect", REF), "timed out")
    with HubServer() as gone:
        dead = gone.url
    monkeypatch.setenv("HF_ENDPOINT", dead)
    one_line_error(run_cli("inspect", "hf://org/other"), f"failed after {remote.TRIES} tries")


def test_batch_with_a_failing_reference_exits_1(hub, model, run_cli, tmp_path) -> None:
    result = run_cli("fingerprint", REF, "hf://org/none", "-o", tmp_path / "fp", "--samples", "1", "-q")
    assert result.code == 1 and "no such repository" in result.err and "Traceback" not in result.err
    assert (tmp_path / "fp" / "tiny_features.json").is_file()


def test_cache_limit_empties_the_least_recent_files(hub, model, tmp_path, monkeypatch) -> None:
    tensorguard.fingerprint(REF, samples=1)
    blocks = list((tmp_path / "mirror").rglob("*.blocks"))
    assert blocks and any(b.read_bytes().count(1) for b in blocks)
    from tensorguard.loading import bytesource, mirror

    bytesource._ATTACHED.clear()  # as a later process: nothing open
    monkeypatch.setenv("TENSORGUARD_REMOTE_CACHE_GB", "0.000001")
    mirror.enforce_limit(tmp_path / "mirror", mirror.cache_limit())
    assert not any(b.exists() for b in blocks)
    mirror._LAID_OUT.clear()
    before = hub.counters.body_bytes
    assert_same(REF, model)  # fetched again, right
    assert hub.counters.body_bytes > before


def test_names_from_a_server_never_reach_outside_the_mirror(hub, model, tmp_path, monkeypatch) -> None:
    real = remote.Http.repo_files

    def hostile(self, repo_id, revision):
        commit, files = real(self, repo_id, revision)
        return commit, {**files, "../../escaped.safetensors": 10, "/abs.safetensors": 10}

    monkeypatch.setattr(remote.Http, "repo_files", hostile)
    assert_same(REF, model)
    assert not list(tmp_path.rglob("escaped.safetensors")) and not Path("/abs.safetensors").exists()
    for url in ("http://127.0.0.1:1/a/%2E%2E/x.gguf", "http://127.0.0.1:1/a/b%2Fc.gguf"):
        with pytest.raises(TensorguardError, match="not a plain name"):
            parse_reference(url)
