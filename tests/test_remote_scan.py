"""``scan`` of a remote model reads only what its answer needs: the query's signature over two
blocks, the confirmation's deciding signals, and no fingerprint once a match is confirmed; it
answers as the local scan does."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import tensorguard
from remote_support import serving
from tensorguard.catalogue import Answer, Catalogue
from tensorguard.catalogue.scanning import QUERY_BLOCKS
from tensorguard.lineage import Context, Subject, compare_subjects, confirm_subjects
from tensorguard.lineage.distance import load_reference
from tensorguard.lineage.weights import may_be_identical
from tensorguard.loading import open_model
from tensorguard.signatures import compute_signature, sample_blocks, similarity
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model

#: Blocks large against the embedding and the mirror's 64 KiB blocks, as in real models.
SPEC = ModelSpec(scheme="llama", hidden=256, layers=8, intermediate=1024, vocab=2048, heads=8,
                 kv_heads=4, tied=True)
#: Share of the served file a remote scan of a confirmed derivative may fetch (the old scan: 96 %).
BOUND = 0.45


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("scan-models")
    base = make_weights(SPEC, 0)
    return {"base": save_model(base, root / "base", dtype=torch.bfloat16),
            "tuned": save_model(finetune(base, 0.01, seed=1), root / "tuned", dtype=torch.bfloat16, shards=2),
            "other": save_model(make_weights(SPEC, 7), root / "other", dtype=torch.bfloat16)}


def _answer(result: tensorguard.ScanResult) -> dict[str, object]:
    return {"answer": result.answer, "base": result.base, "summary": result.summary,
            "skipped": result.skipped,
            "candidates": [(c.name, c.match, c.confirmation) for c in result.candidates]}


def test_remote_scan_of_a_derivative_fetches_a_bounded_share_and_answers_as_the_local_scan(
        models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "catalogue.sqlite"
    Catalogue(db, builtin=False).add([models["base"], models["other"]])
    local = tensorguard.scan(models["tuned"], catalogue=Catalogue(db, builtin=False), device="cpu")
    with serving(tmp_path, monkeypatch) as hub:
        hub.add_repo("org/tuned", models["tuned"])
        remote = tensorguard.scan("hf://org/tuned", catalogue=Catalogue(db, builtin=False), device="cpu")
        fetched = hub.counters.body_bytes
    size = sum(f.stat().st_size for f in models["tuned"].glob("*.safetensors"))
    assert local.answer is Answer.DERIVED and local.base == "base"
    assert _answer(remote) == _answer(local)
    assert remote.skipped and remote.skipped[0].startswith("fingerprint")  # a derived answer needs none
    assert all(c.fingerprint_distance is None for c in remote.candidates)
    assert 0 < fetched <= BOUND * size, f"fetched {fetched / size:.1%} of the file"


def test_without_a_confirmed_match_the_fingerprint_is_computed(models: dict[str, Path],
                                                              tmp_path: Path) -> None:
    db = tmp_path / "catalogue.sqlite"
    Catalogue(db, builtin=False).add([models["other"]])
    found = tensorguard.scan(models["tuned"], catalogue=Catalogue(db, builtin=False), device="cpu")
    assert found.answer is Answer.NONE and found.skipped == ()
    assert found.candidates[0].fingerprint_distance is not None


def test_a_sampled_signature_is_a_subset_of_the_full_one(models: dict[str, Path]) -> None:
    assert sample_blocks(8, 2) == [0, 7] and sample_blocks(8, 4) == [0, 2, 5, 7]
    assert sample_blocks(3, 9) == [0, 1, 2] and sample_blocks(5, 1) == [2]
    full, part = compute_signature(models["tuned"]), compute_signature(models["tuned"], blocks=QUERY_BLOCKS)
    assert part.block_index == (0, 7) and part.block_tokens == full.block_tokens
    assert (part.blocks == full.blocks[[0, 7]]).all() and (part.embed == full.embed).all()
    base = compute_signature(models["base"])
    assert [(p.block_a, p.block_b) for p in similarity(part, base).pairs] == [(0, 0), (7, 7)]


@pytest.mark.parametrize("pair", [("base", "tuned"), ("base", "base"), ("base", "other")])
def test_confirm_subjects_decides_as_compare_subjects(models: dict[str, Path], pair: tuple[str, str]) -> None:
    context = Context(load_reference(None), 4)
    with open_model(models[pair[0]]) as a, open_model(models[pair[1]]) as b:
        subjects = [Subject(s.name, models[n], None, s) for s, n in ((a, pair[0]), (b, pair[1]))]
        full, quick = compare_subjects(*subjects, context), confirm_subjects(*subjects, context)
        identical = may_be_identical(a, b)
    assert quick.verdict == full.verdict
    assert identical == (pair[0] == pair[1])
    # the cosines are read only where the test does not decide alone (a derivative: it does)
    assert (quick.weights is None) == (pair == ("base", "tuned"))
    if quick.weights is not None:
        assert json.dumps(dataclasses.asdict(quick.weights), default=str) == \
            json.dumps(dataclasses.asdict(full.weights), default=str)  # type: ignore[arg-type]
