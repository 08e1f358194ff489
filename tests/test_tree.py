"""``tensorguard tree``: a family of tiny real models with known edges comes back as its tree, with
each edge's direction and kind; the outputs are deterministic and bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks.lineage_corpus import merge, prune_magnitude, quantize_4bit, quantize_int8

import tensorguard
from tensorguard.genealogy import EdgeKind, Tree
from tensorguard.genealogy.artefacts import GRIDS, float_bits, grid_of
from tensorguard.synthetic import ModelSpec, finetune, low_rank_update, make_weights, save_model

SPEC = ModelSpec(hidden=64, layers=2, intermediate=128, vocab=256)

#: child -> (parent(s), kind): the family every test builds.
TRUTH = {"ft1": (("base",), EdgeKind.FINETUNED), "ft2": (("base",), EdgeKind.FINETUNED),
         "ft1-int8": (("ft1",), EdgeKind.QUANTIZED), "base-4bit": (("base",), EdgeKind.QUANTIZED),
         "base-pruned": (("base",), EdgeKind.PRUNED), "base-lora": (("base",), EdgeKind.ADAPTER),
         "merged": (("ft1", "ft2"), EdgeKind.MERGE), "other-bf16": (("other",), EdgeKind.CAST)}


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family")
    base, other = make_weights(SPEC, 0), make_weights(SPEC, 9)
    ft1, ft2 = finetune(base, 0.3, 1), finetune(base, 0.3, 2)
    weights = {"base": base, "ft1": ft1, "ft2": ft2, "ft1-int8": quantize_int8(ft1),
               "base-4bit": quantize_4bit(base), "base-pruned": prune_magnitude(base),
               "base-lora": low_rank_update(base, 4, 0.3, 5), "merged": merge(ft1, ft2), "other": other,
               "other-bf16": other}
    return {name: save_model(w, root / name, dtype=torch.bfloat16 if name == "other-bf16" else torch.float32)
            for name, w in weights.items()}


@pytest.fixture(scope="module")
def result(family: dict[str, Path]) -> Tree:
    return tensorguard.tree(list(family.values()))


def test_the_tree_is_recovered_with_directions_kinds_and_roots(result: Tree) -> None:
    assert result.roots == ("base", "other")
    assert all(f.root_told for f in result.families)
    found = {(e.parent, e.child): e for e in result.edges}
    expected = {(p, child) for child, (parents, _) in TRUTH.items() for p in parents}
    assert set(found) == expected
    for child, (parents, kind) in TRUTH.items():
        for p in parents:
            edge = found[p, child]
            assert edge.kind is kind, (p, child, edge)
            assert edge.directed and edge.direction > 0 and 0 < edge.confidence <= 1
    assert found["ft1", "ft1-int8"].cue == "precision"
    assert found["base", "base-pruned"].cue == "sparsity"
    assert result.parents("merged") == ("ft1", "ft2")


def test_identical_copies_are_same_weights_and_not_oriented(tmp_path: Path) -> None:
    w = make_weights(SPEC, 3)
    t = tensorguard.tree([save_model(w, tmp_path / "a"), save_model(w, tmp_path / "b")])
    (edge,) = t.edges
    assert edge.kind is EdgeKind.SAME and not edge.directed and edge.cue is None
    assert not t.families[0].root_told  # nothing tells which copy came first


def test_grids_are_found_and_float_weights_sit_on_none() -> None:
    w = make_weights(SPEC, 1)["model.layers.0.mlp.up_proj.weight"]
    assert grid_of(w.double().numpy()) is None
    assert float_bits(w.double().numpy()) == 32
    quantized = quantize_int8({"m": w})["m"].double().numpy()
    assert grid_of(quantized) in [g for g in GRIDS if g.bits == 8]
    assert grid_of(quantize_4bit({"m": w})["m"].double().numpy()).bits == 4  # type: ignore[union-attr]
    assert float_bits(w.to(torch.bfloat16).float().double().numpy()) == 16


def test_cli_text_json_dot_and_png_are_deterministic(run_cli, family: dict[str, Path],  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    paths = list(family.values())
    text = run_cli("tree", *paths)
    assert text.code == 0, text.err
    assert text.out.splitlines()[0] == "10 models, 2 families, 9 edges"
    assert "merged  (merge parent" in text.out and "also from ft2" in text.out
    first = run_cli("tree", *paths, "--json", "--dot", tmp_path / "t.dot", "--plot", tmp_path / "t.png")
    again = run_cli("tree", *paths, "--json", "--dot", tmp_path / "u.dot", "--plot", tmp_path / "u.png")
    assert first.code == again.code == 0 and first.out == again.out
    data = json.loads(first.out)
    assert [f["root"] for f in data["families"]] == ["base", "other"]
    assert {"parent": "ft1", "child": "ft1-int8"}.items() <= next(
        e for e in data["edges"] if e["child"] == "ft1-int8").items()
    assert (tmp_path / "t.dot").read_text() == (tmp_path / "u.dot").read_text()
    assert '"ft1" -> "ft1-int8" [label="quantized"];' in (tmp_path / "t.dot").read_text()
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "t.png").read_bytes() == (tmp_path / "u.png").read_bytes()


def test_outputs_are_not_overwritten_and_bad_input_is_one_line(run_cli, family: dict[str, Path],  # type: ignore[no-untyped-def]
                                                                tmp_path: Path) -> None:
    taken = tmp_path / "taken.dot"
    taken.write_text("mine")
    refused = run_cli("tree", *family.values(), "--dot", taken)
    assert refused.code == 2 and "--force" in refused.err and taken.read_text() == "mine"
    assert len(refused.err.strip().splitlines()) == 1
    alone = run_cli("tree", family["base"])
    assert alone.code == 2 and "at least two models" in alone.err
    missing = run_cli("tree", family["base"], tmp_path / "nope")
    assert missing.code == 2 and len(missing.err.strip().splitlines()) == 1


def test_similarities_are_symmetric_and_unrelated_models_are_apart(family: dict[str, Path]) -> None:
    from tensorguard.genealogy.candidates import RELATED, products, similarity_matrix
    from tensorguard.genealogy.profiles import profile

    sim = similarity_matrix(products([profile(family[n]) for n in ("base", "other", "ft1")]))
    assert np.allclose(sim, sim.T)
    assert abs(sim[0, 1]) < RELATED < sim[0, 2]


def test_a_renamed_copy_joins_its_family_undirected(tmp_path: Path) -> None:
    import lineage_models as lm

    base = lm.base_weights(4)
    ft = finetune(base, 0.25, 7)
    models = {"base": base, "ft": ft, "ft-renamed": lm.rename(ft, 11), "stranger": lm.base_weights(5)}
    paths = [lm.save(tmp_path / name, w) for name, w in models.items()]
    t = tensorguard.tree(paths)
    assert t.roots == ("base", "stranger")
    (edge,) = [e for e in t.edges if e.child == "ft-renamed"]
    assert (edge.parent, edge.kind, edge.directed) == ("ft", EdgeKind.DISGUISED, False)


def test_catalogue_entries_are_read_where_they_were_indexed(run_cli, family: dict[str, Path],  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    db = tmp_path / "team.sqlite"
    added = run_cli("index", "add", family["base"], "--name", "the-base", "--db", db, "--samples", "2",
                    "--device", "cpu", "-q")
    assert added.code == 0, added.err
    found = run_cli("tree", "the-base", family["ft1"], family["ft1-int8"], "--db", db, "--json")
    assert found.code == 0, found.err
    data = json.loads(found.out)
    assert [f["root"] for f in data["families"]] == ["the-base"]
    assert {(e["parent"], e["child"]) for e in data["edges"]} == {("the-base", "ft1"), ("ft1", "ft1-int8")}
    unknown = run_cli("tree", "nobody", family["ft1"], "--db", db)
    assert unknown.code == 2 and len(unknown.err.strip().splitlines()) == 1


def test_gguf_copies_are_quantized_children_of_the_float_model(tmp_path: Path) -> None:
    from gguf import GGMLQuantizationType

    import lineage_models as lm
    from tensorguard.testing.gguf_write import save_gguf

    base = lm.base_weights(4)
    paths = [lm.save(tmp_path / "base", base)]
    for name, qtype in (("q8_0", GGMLQuantizationType.Q8_0), ("q4_1", GGMLQuantizationType.Q4_1)):
        paths.append(save_gguf(base, tmp_path / f"base-{name}.gguf", arch="llama", heads=lm.SPEC.heads,
                               kv_heads=lm.SPEC.kv_heads, qtype=qtype))
    t = tensorguard.tree(paths)
    assert t.roots == ("base",)
    assert [(e.parent, e.child, e.kind, e.cue) for e in t.edges] == [
        ("base", "base-q8_0", EdgeKind.QUANTIZED, "precision"),
        ("base", "base-q4_1", EdgeKind.QUANTIZED, "precision")]
    assert [m.bits for m in t.models] == [32, 8, 4]


def test_same_grid_copies_hang_from_the_float_model_and_new_tokens_point_to_the_child(tmp_path: Path) -> None:
    from benchmarks.lineage_corpus import extend_vocab
    from gguf import GGMLQuantizationType

    import lineage_models as lm
    from tensorguard.testing.gguf_write import save_gguf

    base = lm.base_weights(5)
    paths = [lm.save(tmp_path / "base", base), lm.save(tmp_path / "base-4bit", quantize_4bit(base)),
             save_gguf(base, tmp_path / "base-q4_1.gguf", arch="llama", heads=lm.SPEC.heads,
                       kv_heads=lm.SPEC.kv_heads, qtype=GGMLQuantizationType.Q4_1),
             lm.save(tmp_path / "base-tokens", extend_vocab(base, 16, 1))]
    t = tensorguard.tree(paths)
    assert t.roots == ("base",)
    # the 4-bit round trip and the Q4_1 file sit on one grid, nearer each other than the float model
    assert {e.child: (e.parent, e.cue) for e in t.edges} == {
        "base-4bit": ("base", "precision"), "base-q4_1": ("base", "precision"),
        "base-tokens": ("base", "vocabulary")}
    assert {e.child: e.kind for e in t.edges if e.child != "base-tokens"} == {
        "base-4bit": EdgeKind.QUANTIZED, "base-q4_1": EdgeKind.QUANTIZED}


def test_a_merged_adapter_hangs_from_the_model_it_differs_from_by_exact_low_rank(tmp_path: Path) -> None:
    base = make_weights(SPEC, 3)
    lora = low_rank_update(base, 4, 0.3, 7)
    # a sibling tuned the same way (most of the adapter's update, plus its own noise) sits nearer
    # the adapter than the base does
    sibling = finetune({n: b + 0.8 * (lora[n] - b) for n, b in base.items()}, 0.05, 8)
    paths = [save_model(w, tmp_path / name) for name, w in
             (("base", base), ("sibling", sibling), ("lora", lora))]
    t = tensorguard.tree(paths)
    assert t.roots == ("base",)
    assert ("base", "lora", EdgeKind.ADAPTER) in {(e.parent, e.child, e.kind) for e in t.edges}
