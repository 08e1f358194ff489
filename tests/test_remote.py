"""Remote models (``hf://`` references and URLs) read through the Hub stand-in: every layout gives
the same tensors, summaries, fingerprints, comparisons and scans as the local files, and only the
ranges read are fetched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tensorguard
from remote_support import build_layouts, repo_folder, serving
from tensorguard.errors import TensorguardError
from tensorguard.loading import mirror, open_model
from tensorguard.loading.reference import HubReference, UrlReference, parse_reference
from tensorguard.report import to_jsonable
from tensorguard.synthetic import ModelSpec, make_weights, save_model
from tensorguard.testing.hub_server import HubServer

LAYOUTS = ("file", "directory", "indexed", "shards", "gguf", "split", "packed")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    return build_layouts(tmp_path_factory.mktemp("layouts"))


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with serving(tmp_path, monkeypatch) as server:
        yield server


def remote(hub: HubServer, layouts: dict[str, Path], layout: str) -> str:
    """Serve ``layout`` as repository ``LAYOUT/FOLDER`` (named as the local folder is); the
    reference that names it."""
    local = layouts[layout]
    folder = repo_folder(local)
    hub.add_repo(f"{layout}/{folder.name}", folder)
    return f"hf://{layout}/{folder.name}" + (f"/{local.name}" if local.is_file() else "")


def same_reads(a: str | Path, b: str | Path) -> None:
    with open_model(a) as x, open_model(b) as y:
        assert x.name == y.name and x.layout == y.layout and list(x.tensors) == list(y.tensors)
        for name in x.tensors:
            assert torch.equal(x.read(name), y.read(name)), name
        assert torch.equal(x.read_rows(name, 1, 3), y.read_rows(name, 1, 3))


def test_references_parse_and_local_paths_stay_paths() -> None:
    assert parse_reference("models/tiny") is None
    assert parse_reference("hf://org/name") == HubReference("org/name", "main", "")
    assert parse_reference("hf://org/name@v1.0/sub/dir/") == HubReference("org/name", "v1.0", "sub/dir")
    assert parse_reference("hf://org/name@refs/pr/3/x.gguf") == \
        HubReference("org/name", "refs/pr/3", "x.gguf")
    assert parse_reference("https://h.example/a/m.gguf") == UrlReference("https://h.example/a/m.gguf")
    assert str(HubReference("org/name", "main", "x")) == "hf://org/name/x"
    assert HubReference("org/name", "dev", "").pinned("abc") == "hf://org/name@abc"
    for bad in ("hf://name", "hf://org/name/../up", "https://h.example/a/config.json", "http:///x.gguf"):
        with pytest.raises(TensorguardError, match=r"not a Hub reference|must name|no host"):
            parse_reference(bad)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_as_the_local_files(hub, layouts, layout) -> None:
    ref = remote(hub, layouts, layout)
    same_reads(ref, layouts[layout])
    here, there = to_jsonable(tensorguard.inspect(layouts[layout])), to_jsonable(tensorguard.inspect(ref))
    assert there.pop("path") == ref.replace("/tiny", f"/tiny@{hub.repos[f'{layout}/tiny'].commit}", 1)
    here.pop("path")
    assert here == there
    assert tensorguard.fingerprint(ref, samples=2).to_dict() == \
        tensorguard.fingerprint(layouts[layout], samples=2).to_dict()


def test_url_of_a_file_an_index_and_a_split_part(hub, layouts) -> None:
    for layout, name in (("file", "model.safetensors"), ("indexed", "model.safetensors.index.json"),
                         ("gguf", "tiny.gguf"), ("split", "tiny-00002-of-00003.gguf")):
        folder = repo_folder(layouts[layout])
        for f in folder.iterdir():
            hub.serve_file(f"{layout}/tiny/{f.name}", f)
        same_reads(f"{hub.url}/files/{layout}/tiny/{name}", folder / name)


def test_lora_adapter_whose_base_is_another_reference(hub, layouts) -> None:
    adapter, base = remote(hub, layouts, "lora"), remote(hub, layouts, "directory")
    got = tensorguard.fingerprint(adapter, base=base, samples=2).to_dict()
    assert got == tensorguard.fingerprint(layouts["lora"], base=layouts["directory"], samples=2).to_dict()


def test_subfolder_revision_and_commit(hub, tmp_path) -> None:
    repo = tmp_path / "repo"
    save_model(make_weights(ModelSpec(), 0), repo / "sub" / "inner")
    commit = hub.add_repo("org/nested", repo, branches={"v1": "0" * 40})
    hub.repos["org/nested"].branches["v1"] = commit
    for ref in ("hf://org/nested/sub/inner", f"hf://org/nested@{commit}/sub/inner",
                "hf://org/nested@v1/sub/inner/model.safetensors"):
        summary = tensorguard.inspect(ref)
        assert summary.path.startswith(f"hf://org/nested@{commit}/sub/inner")
        assert summary.name in ("inner", "model")
    for ref, message in (("hf://org/nested@nope", "no such revision"),
                         ("hf://org/missing", "no such repository"),
                         ("hf://org/nested/elsewhere", "no file or folder 'elsewhere'")):
        with pytest.raises(TensorguardError, match=message):
            tensorguard.inspect(ref)


def test_cli_commands_take_references(hub, layouts, run_cli, tmp_path) -> None:
    ref = remote(hub, layouts, "directory")
    tuned = tmp_path / "tuned"
    weights = make_weights(ModelSpec(scheme="llama", hidden=64, layers=2, intermediate=128, vocab=96,
                                     heads=4, kv_heads=2), seed=3)
    save_model({n: w * 1.01 for n, w in weights.items()}, tuned)
    hub.add_repo("org/tuned", tuned)
    inspected = run_cli("inspect", ref, "--json")
    assert inspected.code == 0, inspected.err
    assert json.loads(inspected.out)["path"].startswith("hf://directory/tiny@")
    fingerprinted = run_cli("fingerprint", ref, "-o", tmp_path / "fp", "--samples", "2", "-q")
    assert fingerprinted.code == 0, fingerprinted.err
    local = run_cli("compare", layouts["directory"], tuned, "--json", "-q")
    there = run_cli("compare", ref, "hf://org/tuned", "--json", "-q")
    assert there.code == 0, there.err
    remote_compare = json.loads(there.out)
    assert remote_compare.pop("bytes_fetched") > 0
    assert remote_compare == json.loads(local.out)
    db = tmp_path / "cat.sqlite"
    added = run_cli("index", "add", ref, "--db", db, "--samples", "2", "-q")
    assert added.code == 0, added.err
    entries = run_cli("index", "list", "--db", db, "--json", "--no-builtin")
    assert f"hf://directory/tiny@{hub.repos['directory/tiny'].commit}" in entries.out
    local_scan = run_cli("scan", tuned, "--db", db, "--json", "-q", "--no-builtin", "--samples", "2")
    remote_scan = run_cli("scan", "hf://org/tuned", "--db", db, "--json", "-q", "--no-builtin",
                          "--samples", "2")
    assert remote_scan.code == local_scan.code == 0, remote_scan.err
    a, b = json.loads(local_scan.out), json.loads(remote_scan.out)
    assert b.pop("path").startswith("hf://org/tuned@")
    assert b.pop("bytes_fetched") >= 0
    assert a.pop("bytes_fetched") == 0  # confirming reads the catalogued remote model, mirrored
    a.pop("path")
    assert a == b


def test_inspect_fetches_headers_only_and_a_second_command_fetches_nothing(hub, tmp_path) -> None:
    big = ModelSpec(scheme="llama", hidden=256, layers=2, intermediate=1024, vocab=2048, heads=4)
    folder = save_model(make_weights(big, 0), tmp_path / "big")
    size = (folder / "model.safetensors").stat().st_size
    hub.add_repo("org/big", folder)
    tensorguard.inspect("hf://org/big")
    fetched = hub.counters.body_bytes
    assert fetched <= 2 * mirror.BLOCK < size / 20
    assert mirror.traffic("hf://org/big@" + hub.repos["org/big"].commit).fetched == fetched
    mirror._LAID_OUT.clear()  # as a new process would
    tensorguard.inspect("hf://org/big")
    assert hub.counters.body_bytes == fetched


def test_offline_reads_the_cache_or_says_nothing_is_cached(hub, layouts, monkeypatch, run_cli) -> None:
    ref = remote(hub, layouts, "gguf")
    want = tensorguard.inspect(ref)
    mirror._LAID_OUT.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert tensorguard.inspect(ref) == want
    missing = run_cli("inspect", "hf://org/never-fetched")
    assert missing.code == 2 and "HF_HUB_OFFLINE" in missing.err and "Traceback" not in missing.err
    assert len(missing.err.strip().splitlines()) == 1


def test_sensitivity_of_a_reference_equals_the_local_one(hub, layouts, run_cli, tmp_path) -> None:
    ref = remote(hub, layouts, "directory")
    local = run_cli("sensitivity", layouts["directory"], "-o", tmp_path / "a", "--json", "-q")
    there = run_cli("sensitivity", ref, "-o", tmp_path / "b", "--json", "-q")
    assert local.code == there.code == 0, there.err
    a, b = json.loads(local.out)["results"][0], json.loads(there.out)["results"][0]
    assert b.pop("path").startswith("hf://directory/tiny@")
    a.pop("path")
    assert a == b
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == \
        sorted(p.name for p in (tmp_path / "a").iterdir())


def test_compare_and_scan_of_gguf_and_sharded_references(hub, layouts, run_cli, tmp_path) -> None:
    gguf, indexed = remote(hub, layouts, "gguf"), remote(hub, layouts, "indexed")
    local = run_cli("compare", layouts["gguf"], layouts["indexed"], "--json", "-q", "--samples", "2")
    there = run_cli("compare", gguf, indexed, "--json", "-q", "--samples", "2")
    assert there.code == local.code == 0, there.err
    remote_compare = json.loads(there.out)
    assert remote_compare.pop("bytes_fetched") > 0
    assert remote_compare == json.loads(local.out)
    db = tmp_path / "cat.sqlite"
    assert run_cli("index", "add", layouts["indexed"], "--db", db, "--samples", "2", "-q").code == 0
    scans = [json.loads(run_cli("scan", m, "--db", db, "--json", "-q", "--no-builtin", "--samples", "2").out)
             for m in (layouts["gguf"], gguf)]
    assert scans[1].pop("path").startswith("hf://gguf/tiny@")
    assert scans[1].pop("bytes_fetched") >= 0
    scans[0].pop("path")
    assert scans[0] == scans[1]


def test_json_says_bytes_fetched_for_remote_models_only(hub, tmp_path, run_cli) -> None:
    folder = save_model(make_weights(ModelSpec(scheme="llama", hidden=64, layers=2, intermediate=128,
                                               vocab=96, heads=4, kv_heads=2), 5), tmp_path / "tiny")
    hub.add_repo("org/other", folder)
    ref = "hf://org/other"

    def fetched(*args: object) -> tuple[object, int]:
        before = hub.counters.body_bytes
        result = run_cli(*args, "--json", "-q")
        assert result.code == 0, result.err
        return json.loads(result.out), hub.counters.body_bytes - before

    local, _ = fetched("inspect", folder)
    assert "bytes_fetched" not in local
    there, served = fetched("inspect", ref)
    assert isinstance(there, dict) and there.pop("bytes_fetched") == served > 0
    there, served = fetched("fingerprint", ref, "--samples", "2")
    assert isinstance(there, dict) and there["bytes_fetched"] == served > 0
    db = tmp_path / "cat.sqlite"
    added, served = fetched("index", "add", folder, ref, "--db", db, "--samples", "2")
    assert isinstance(added, list)
    assert "bytes_fetched" not in added[0] and added[1]["bytes_fetched"] == served  # all mirrored
    local_only = tmp_path / "local.sqlite"  # confirming against a remote entry would read it
    assert run_cli("index", "add", folder, "--db", local_only, "--samples", "2", "-q").code == 0
    scans, served = fetched("scan", folder, ref, "--db", local_only, "--no-builtin", "--samples", "2")
    assert isinstance(scans, list) and "bytes_fetched" not in scans[0]
    assert scans[1]["bytes_fetched"] == served  # a second command fetches only what is new
    compared, served = fetched("compare", folder, ref, "--samples", "2")
    assert isinstance(compared, dict) and compared["bytes_fetched"] == served
