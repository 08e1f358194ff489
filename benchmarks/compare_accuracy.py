"""What the cheaper ``compare`` settings give up, measured against their exact or full versions.

1. Cosine: the seeded row sample (``weights.EXACT_LIMIT`` entries) against the exact float64
   cosine over every entry, for matrices of the benchmark shape with true cosine 0 to 0.9.
2. Residual alignment: share of residual dimensions recovered by Procrustes from ``VOCAB_ROWS``
   embedding rows against 32768 rows, for a renamed copy whose columns keep correlation r.
3. Neuron matching: the test with ``MATCH_NEURONS`` matched neurons against every neuron, on
   fine-tune-like renamed copies of growing noise ``s`` and on independent inits (hidden 256,
   2048 MLP neurons, 4 blocks).

Run: ``python benchmarks/compare_accuracy.py`` (a few minutes on one core).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from tensorguard.lineage import alignment as al
from tensorguard.lineage import independence as ind
from tensorguard.lineage.weights import cosine
from tensorguard.loading import open_model
from tensorguard.report import table
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model
from tensorguard.testing.renaming import Renaming

SPEC = ModelSpec(scheme="llama", hidden=256, layers=4, intermediate=2048, vocab=4096, heads=4, kv_heads=2)
MATCH_NEURONS, VOCAB_ROWS = ind.MATCH_NEURONS, al.VOCAB_ROWS
EMBED = "model.embed_tokens.weight"


def _noisy(x: torch.Tensor, r: float, gen: torch.Generator) -> torch.Tensor:
    """``x`` plus independent noise so that the two correlate by ``r``."""
    s = math.sqrt(1 / r**2 - 1) if r > 0 else 0.0
    noise = torch.randn(x.shape, generator=gen)
    return noise if r == 0 else x + s * x.std() * noise


def cosine_table() -> str:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape in ((2048, 2048), (8192, 2048), (2048, 8192), (32768, 2048)):
        x = torch.randn(shape, generator=gen).bfloat16()
        for r in (0.0, 0.3, 0.9):
            y = _noisy(x.float(), r, gen).bfloat16()
            exact = float(torch.nn.functional.cosine_similarity(x.double().reshape(1, -1),
                                                                y.double().reshape(1, -1)))
            rows.append([f"{shape[0]} x {shape[1]}", r, f"{exact:.4f}", f"{cosine(x, y):.4f}",
                         f"{abs(cosine(x, y) - exact):.4f}"])
    return table(["matrix", "true r", "exact", "sampled", "|error|"], rows)


def alignment_table(tmp: Path) -> str:
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(32768, 2048, generator=gen)
    perm = torch.randperm(2048, generator=gen)
    path_a = save_model({EMBED: emb}, tmp / "emb_a.safetensors", dtype=torch.bfloat16)
    rows = []
    for r in (0.25, 0.1, 0.06, 0.05, 0.04):
        path_b = save_model({EMBED: _noisy(emb, r, gen)[:, perm]}, tmp / "emb_b.safetensors",
                            dtype=torch.bfloat16)
        row: list[object] = [r]
        for vocab_rows in (VOCAB_ROWS, 32768):
            al.VOCAB_ROWS = vocab_rows
            with open_model(path_a) as a, open_model(path_b) as b:
                _, aligner = al.align_residual(a, b, EMBED, EMBED)
            row.append(f"{float((aligner.w.abs().argmax(dim=1) == perm).float().mean()):.3f}")
        rows.append(row)
    al.VOCAB_ROWS = VOCAB_ROWS
    return table(["column r", f"recovered ({VOCAB_ROWS} rows)", "recovered (32768 rows)"], rows)


def matching_table(tmp: Path) -> str:
    base = make_weights(SPEC, 0)
    renaming = Renaming(SPEC.hidden, SPEC.heads, SPEC.kv_heads or SPEC.heads, SPEC.intermediate, 1)
    pairs = [(f"fine-tune s={s:g}, renamed",
              {n: renaming.apply(n, t) for n, t in finetune(base, s, seed=7).items()})
             for s in (1.0, 3.0, 4.0, 5.0, 5.5, 6.0)]
    pairs += [(f"independent init {seed}", make_weights(SPEC, seed)) for seed in (1, 2, 3)]
    path_a = save_model(base, tmp / "a.safetensors")
    rows = []
    for label, other in pairs:
        path_b = save_model(other, tmp / "b.safetensors")
        for neurons in (MATCH_NEURONS, SPEC.intermediate):
            ind.MATCH_NEURONS = neurons
            with open_model(path_a) as a, open_model(path_b) as b:
                t = ind.independence_test(a, b)
            rows.append([label, t.blocks[0].matched, " ".join(f"{b.rho:.2f}" for b in t.blocks),
                         f"{t.log10_p:.1f}", "yes" if (t.log10_p or 0.0) < -3 else "no"])
    ind.MATCH_NEURONS = MATCH_NEURONS
    return table(["pair", "neurons", "rho per block", "log10 p", "rejects"], rows)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for title, make in (("cosine: seeded row sample vs exact", cosine_table),
                            ("residual alignment", lambda: alignment_table(Path(tmp))),
                            ("neuron matching", lambda: matching_table(Path(tmp)))):
            print(f"{title}\n{make()}\n", flush=True)


if __name__ == "__main__":
    main()
