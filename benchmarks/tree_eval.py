"""Does ``tensorguard tree`` recover a known forest? Edges, directions, kinds and roots, and MoTHer's
direction rule beside ours; then how its time grows with the number of models.

``python benchmarks/tree_eval.py [--families 5] [--scale 200] [--workdir DIR]``
``python benchmarks/tree_eval.py --lineage-corpus DIR...`` (the trained corpus instead: below)

1. A synthetic corpus of ``--families`` families (written once under ``--workdir``): each base a
   tiny Llama-named model whose matrices carry outlier columns (log-normal column scales, as
   trained weights do), and 19 derivatives with known parents made by real operations: additive
   and multiplicative fine-tunes, a second fine-tune on top (chains of two steps), a merged LoRA
   (rank 8), int8 and 4-bit group round trips (of the base and of a fine-tune), 30% magnitude
   pruning, a bf16 cast, a linear merge of two fine-tunes, removal of two middle blocks, and the
   function-preserving disguises of ``tensorguard.testing.disguises`` (rescaling; renaming of
   hidden units; rotation of the residual basis).
2. ``tensorguard.tree`` over the whole corpus at once; against the truth: edge precision and recall
   (unordered pairs), direction accuracy over the recovered true edges that the tree orients (and
   how many it leaves undirected), kind accuracy, root precision and recall; per transform, what
   became of its edge. MoTHer's rule (Horwitz et al. 2024: the parent is the model of lower
   kurtosis) is scored on the same recovered edges.
3. ``--lineage-corpus DIR...``: instead of 1 to 3, ``tree`` over every model folder of the lineage
   corpus that ``benchmarks/lineage_corpus.py`` built (its ``lineage-v1`` and
   ``lineage-formats-v1`` folders; read in place, never written), scored as in 2 against the
   parents its ``TRANSFORMS`` make each derivative from (``LINEAGE_PARENTS``).
4. ``--scale N``: N models (N/10 families of 10), small and larger, the time of ``tree`` against the
   time of reading every tensor of every model once (the floor of any weight-reading method).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import build_once  # noqa: E402
from benchmarks.lineage_corpus import merge, prune_magnitude, quantize_4bit, quantize_int8  # noqa: E402
from tensorguard.genealogy import EdgeKind, Tree, tree  # noqa: E402
from tensorguard.genealogy.direction import KURTOSIS  # noqa: E402
from tensorguard.genealogy.profiles import profile  # noqa: E402
from tensorguard.loading import open_model  # noqa: E402
from tensorguard.report import table  # noqa: E402
from tensorguard.synthetic import ModelSpec, finetune, low_rank_update, make_weights, save_model  # noqa: E402
from tensorguard.testing.disguises import drop_blocks, rename, rescale, rotate  # noqa: E402

Weights = dict[str, torch.Tensor]
SPEC = ModelSpec(scheme="llama", hidden=64, layers=6, intermediate=192, vocab=512, heads=4, kv_heads=2)
#: The scaling run's models: small (4.4 MB in float32) and larger (17 MB: matrices of 196,608 entries).
SCALE_SPECS = {
    "small": ModelSpec(scheme="llama", hidden=128, layers=4, intermediate=384, vocab=1024, heads=4,
                       kv_heads=2),
    "larger": ModelSpec(scheme="llama", hidden=256, layers=4, intermediate=768, vocab=2048, heads=4,
                        kv_heads=2),
}
CORPUS_VERSION = 1


def trained_like(seed: int, spec: ModelSpec = SPEC) -> Weights:
    """A base: seeded weights whose matrices carry outlier input columns (log-normal scales)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    return {n: t * torch.exp(0.6 * torch.randn(t.shape[1], generator=gen))[None, :] if t.ndim == 2 else t
            for n, t in make_weights(spec, seed).items()}


def multiplicative(w: Weights, scale: float, seed: int) -> Weights:
    """A fine-tune whose update follows the weights' own magnitude (outliers grow with it)."""
    gen = torch.Generator().manual_seed(seed)
    return {n: t * (1 + scale * torch.randn(t.shape, generator=gen)) if t.ndim == 2 else t
            for n, t in w.items()}


#: name -> (parent, true kind, how it is made from the models made before it). Order matters.
RECIPE: dict[str, tuple[str, EdgeKind, object]] = {
    "ft": ("base", EdgeKind.FINETUNED, lambda m, s: finetune(m["base"], 0.25, s + 1)),
    "ftm": ("base", EdgeKind.FINETUNED, lambda m, s: multiplicative(m["base"], 0.3, s + 2)),
    "ft-ft": ("ft", EdgeKind.FINETUNED, lambda m, s: finetune(m["ft"], 0.2, s + 3)),
    "ftm-ft": ("ftm", EdgeKind.FINETUNED, lambda m, s: multiplicative(m["ftm"], 0.2, s + 4)),
    "lora": ("base", EdgeKind.ADAPTER, lambda m, s: low_rank_update(m["base"], 8, 0.25, s + 5)),
    "ft-lora": ("ft", EdgeKind.ADAPTER, lambda m, s: low_rank_update(m["ft"], 8, 0.2, s + 6)),
    "int8": ("base", EdgeKind.QUANTIZED, lambda m, s: quantize_int8(m["base"])),
    "4bit": ("base", EdgeKind.QUANTIZED, lambda m, s: quantize_4bit(m["base"])),
    "ft-int8": ("ft", EdgeKind.QUANTIZED, lambda m, s: quantize_int8(m["ft"])),
    "ftm-4bit": ("ftm", EdgeKind.QUANTIZED, lambda m, s: quantize_4bit(m["ftm"])),
    "prune30": ("base", EdgeKind.PRUNED, lambda m, s: prune_magnitude(m["base"], 0.3)),
    "ft-prune30": ("ft", EdgeKind.PRUNED, lambda m, s: prune_magnitude(m["ft"], 0.3)),
    "bf16": ("ftm", EdgeKind.CAST, lambda m, s: m["ftm"]),  # saved as bfloat16
    "merge": ("ft", EdgeKind.MERGE, lambda m, s: merge(m["ft"], m["ftm"])),  # and from ftm
    "drop-blocks": ("base", EdgeKind.PRUNED, lambda m, s: drop_blocks(m["base"], (2, 3))),
    "rescale": ("ftm", EdgeKind.RESCALED, lambda m, s: rescale(m["ftm"], SPEC, seed=s + 7)),
    "permute": ("ft", EdgeKind.DISGUISED, lambda m, s: rename(m["ft"], SPEC, seed=s + 8)),
    "rotate": ("ft", EdgeKind.DISGUISED, lambda m, s: rotate(m["ft"], SPEC, seed=s + 9)),
}
SECOND_PARENT = {"merge": "ftm"}
BF16 = {"bf16"}


def build(folder: Path, families: int) -> None:
    for f in range(families):
        made = {"base": trained_like(f)}
        save_model(made["base"], folder / f"f{f}-base")
        for name, (_, _, make) in RECIPE.items():
            made[name] = make(made, 1000 * (f + 1))  # type: ignore[operator]
            save_model(made[name], folder / f"f{f}-{name}",
                       dtype=torch.bfloat16 if name in BF16 else torch.float32)


def truth(families: int) -> tuple[dict[tuple[str, str], EdgeKind], set[str]]:
    edges = {}
    for f in range(families):
        for name, (parent, kind, _) in RECIPE.items():
            edges[f"f{f}-{parent}", f"f{f}-{name}"] = kind
            if name in SECOND_PARENT:
                edges[f"f{f}-{SECOND_PARENT[name]}", f"f{f}-{name}"] = kind
    return edges, {f"f{f}-base" for f in range(families)}


def evaluate(result: Tree, true_edges: dict[tuple[str, str], EdgeKind], true_roots: set[str],
             profiles: dict[str, object], transform: Callable[[str], str]) -> str:
    """The scores of ``result`` against the known edges (parent, child) -> kind and roots; per
    transform (``transform(child)``), what became of its edges."""
    found = {(e.parent, e.child): e for e in result.edges}
    unordered_true = {frozenset(k) for k in true_edges}
    unordered_found = {frozenset(k) for k in found}
    hits = unordered_true & unordered_found
    recovered = [(k, found[k] if k in found else found[k[::-1]]) for k in true_edges if frozenset(k) in hits]
    directed = [(k, e) for k, e in recovered if e.directed]
    right = sum((e.parent, e.child) == k for k, e in directed)
    kinds = sum(e.kind is true_edges[k] for k, e in recovered)
    mother = sum(KURTOSIS.vote(profiles[k[0]], profiles[k[1]]) > 0 for k, _ in recovered)  # type: ignore[arg-type]
    roots = set(result.roots)
    rows = [
        ["edge precision", f"{len(hits)}/{len(unordered_found)}", len(hits) / max(1, len(unordered_found))],
        ["edge recall", f"{len(hits)}/{len(unordered_true)}", len(hits) / len(unordered_true)],
        ["direction (ours), oriented edges", f"{right}/{len(directed)}", right / max(1, len(directed))],
        ["edges left undirected", f"{len(recovered) - len(directed)}/{len(recovered)}",
         (len(recovered) - len(directed)) / max(1, len(recovered))],
        ["direction (MoTHer kurtosis rule), all recovered", f"{mother}/{len(recovered)}",
         mother / max(1, len(recovered))],
        ["edge kind", f"{kinds}/{len(recovered)}", kinds / max(1, len(recovered))],
        ["root precision", f"{len(roots & true_roots)}/{len(roots)}", len(roots & true_roots) / len(roots)],
        ["root recall", f"{len(roots & true_roots)}/{len(true_roots)}",
         len(roots & true_roots) / len(true_roots)],
    ]
    per: dict[str, Counter[str]] = {}
    for (parent, child), kind in true_edges.items():
        e = found.get((parent, child)) or found.get((child, parent))
        outcome = ("missed" if e is None else "reversed" if e.child == parent and e.directed
                   else "undirected" if not e.directed else "right")
        per.setdefault(transform(child), Counter())[outcome] += 1
        if e is not None and e.kind is not kind:
            per[transform(child)][f"kind {e.kind}"] += 1
    detail = [[t, ", ".join(f"{k} {v}" for k, v in sorted(c.items()))] for t, c in per.items()]
    wrong = sorted(f"{e.parent} -> {e.child} ({e.kind})" for k, e in found.items()
                   if frozenset(k) not in hits)
    extra = "\n\nfalse edges:\n" + "\n".join(wrong) if wrong else ""
    return table(["measure", "count", "value"], rows) + "\n\n" + table(["transform", "edges"], detail) + extra


#: The lineage corpus (``benchmarks/lineage_corpus.py``): each derivative's parent transform
#: (``None``: the base), as ``TRANSFORMS`` makes it, and the kind of edge expected.
LINEAGE_PARENTS: dict[str, tuple[tuple[str | None, ...], EdgeKind]] = {
    "finetune": ((None,), EdgeKind.FINETUNED),
    "finetune-long": ((None,), EdgeKind.FINETUNED),
    "lora": ((None,), EdgeKind.ADAPTER),
    "int8": ((None,), EdgeKind.QUANTIZED),
    "4bit": ((None,), EdgeKind.QUANTIZED),
    "prune30": ((None,), EdgeKind.PRUNED),
    "drop-blocks": ((None,), EdgeKind.PRUNED),
    "vocab-ext": ((None,), EdgeKind.FINETUNED),
    "bf16": ((None,), EdgeKind.CAST),
    "permute": (("finetune",), EdgeKind.DISGUISED),
    "rescale": (("finetune",), EdgeKind.RESCALED),
    "rotate": (("finetune",), EdgeKind.DISGUISED),
    "permute-rescale": ((None,), EdgeKind.DISGUISED),
    "merge": (("finetune", "lora"), EdgeKind.MERGE),
    "gguf-q8_0": ((None,), EdgeKind.QUANTIZED),
    "gguf-q4_1": ((None,), EdgeKind.QUANTIZED),
}


def lineage_truth(paths: list[Path]) -> tuple[dict[tuple[str, str], EdgeKind], set[str]]:
    """Known edges and roots of lineage-corpus model folders named ``BASE`` or ``BASE--TRANSFORM``
    (the derivatives' parents, where not the base, must be among ``paths``)."""
    names = {p.name for p in paths}
    edges, roots = {}, set()
    for name in sorted(names):
        base, _, made = name.partition("--")
        if not made:
            roots.add(name)
            continue
        parents, kind = LINEAGE_PARENTS[made]
        for parent in parents:
            edges[base if parent is None else f"{base}--{parent}", name] = kind
    missing = {p for edge in edges for p in edge} - names
    if missing:
        raise SystemExit(f"the lineage corpus lacks {sorted(missing)[0]}")
    return edges, roots


def run_lineage(folders: list[Path]) -> None:
    """``tree`` over every model folder of ``folders`` at once, scored against the known parents."""
    paths = sorted((p for f in folders for p in f.iterdir() if p.is_dir()), key=lambda p: p.name)
    true_edges, true_roots = lineage_truth(paths)
    start = time.perf_counter()
    result = tree(paths)
    took = time.perf_counter() - start
    profiles = {p.name: profile(p) for p in paths}
    print(f"## lineage corpus: {len(paths)} models, {len(true_roots)} bases: tree in {took:.1f} s\n")
    print(evaluate(result, true_edges, true_roots, profiles, lambda child: child.partition("--")[2]))


def scale(workdir: Path, n: int, size: str) -> list[object]:
    """One row: reading ``n`` models of ``SCALE_SPECS[size]`` once, and ``tree`` over them."""
    spec = SCALE_SPECS[size]
    folder = workdir / f"tree-scale-{n}-{size}-v{CORPUS_VERSION}"

    def write(target: Path) -> None:
        target.mkdir(parents=True)
        for f in range(n // 10):
            base = trained_like(500 + f, spec)
            save_model(base, target / f"s{f}-0.safetensors")
            for i in range(1, 10):
                save_model(finetune(base, 0.1 * i, 7 * f + i), target / f"s{f}-{i}.safetensors")

    build_once(folder, write)
    paths = sorted(folder.glob("*.safetensors"))
    start = time.perf_counter()
    for path in paths:
        with open_model(path) as source:
            for info in source.matrices():
                float(source.read(info.name).sum())  # touched: a mapped file is read on first touch
    read = time.perf_counter() - start
    start = time.perf_counter()
    result = tree(paths)
    took = time.perf_counter() - start
    megabytes = sum(p.stat().st_size for p in paths) / 1e6 / len(paths)
    return [f"{len(paths)} x {megabytes:.1f} MB ({len(result.roots)} roots)", read, took,
            f"{took / read:.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=5)
    parser.add_argument("--scale", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=HERE / ".data")
    parser.add_argument("--lineage-corpus", type=Path, nargs="+", metavar="DIR",
                        help="score tree on the built lineage corpus folders instead (no synthetic run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.lineage_corpus:
        run_lineage(args.lineage_corpus)
        return
    folder = args.workdir / f"tree-corpus-{args.families}-v{CORPUS_VERSION}"
    build_once(folder, lambda target: build(target, args.families))
    paths = sorted(p for p in folder.iterdir() if p.is_dir())
    start = time.perf_counter()
    result = tree(paths)
    took = time.perf_counter() - start
    profiles = {p.name: profile(p) for p in paths}
    print(f"## {len(paths)} models, {args.families} families: tree in {took:.1f} s\n")
    true_edges, true_roots = truth(args.families)
    print(evaluate(result, true_edges, true_roots, profiles, lambda child: child.split("-", 1)[1]))
    if args.scale:
        print(f"\n## scaling: {args.scale} models\n")
        rows = [scale(args.workdir, args.scale, size) for size in SCALE_SPECS]
        print(table(["models", "read each once (s)", "tree (s)", "tree / read"], rows))


if __name__ == "__main__":
    main()
