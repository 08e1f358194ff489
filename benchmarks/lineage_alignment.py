"""Does ``compare`` confirm rotated, sliced and re-tokenized derivatives, and only those?

``python benchmarks/lineage_alignment.py [--bases 20]`` (about two minutes on one core).

Bases are Llama-shaped models built with the structure independently trained models share, so
that independence is tested against a hard null, not white noise: the same privileged residual
dimensions (four outlier dimensions, 4x the scale, in the embedding and in every matrix that
reads the residual stream, as Adam-trained models have), the same row-norm profile over the
vocabulary (leading tokens larger), and, within each MLP, a gate and an up row per neuron that
share a direction (correlation 0.2). A much stronger coupling (about 0.6) inflates the null of
the test itself, with or without the alignment (``docs/alignment.md``). Each base comes from its
own seed: the pairs are "same architecture, trained from different seeds".

1. **Derived**: for 5 bases, a fine-tune (relative noise ``FINETUNE``) disguised by each group of
   ``DISGUISES`` (``tensorguard.testing.disguises``), compared against its base.
2. **Null**: every pair of distinct bases, plain, and each base against the disguised
   fine-tune of two other bases (every disguise group), so that the alignment is exercised on
   independent models of every shape it handles. Every pair is compared; the p-values of the
   independence test are checked against the uniform law (Kolmogorov-Smirnov, and the share
   below 0.05 and 0.01), and every ``derived`` verdict is a false one.

Every model carries a ``tokenizer.json`` (rows are paired by token string).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import stats

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from tensorguard.fingerprints import fingerprint_source  # noqa: E402
from tensorguard.lineage import Context, Subject, compare_subjects  # noqa: E402
from tensorguard.lineage.distance import load_reference  # noqa: E402
from tensorguard.lineage.verdict import detectable_rho  # noqa: E402
from tensorguard.loading import open_model  # noqa: E402
from tensorguard.report import table  # noqa: E402
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model  # noqa: E402
from tensorguard.testing import disguises  # noqa: E402

SPEC = ModelSpec(scheme="llama", hidden=128, layers=4, intermediate=384, vocab=1024, heads=4, kv_heads=2)
TOKENS = disguises.vocabulary(SPEC.vocab)
OUTLIERS = 4
#: A neuron's gate and up rows are one shared direction plus their own noise this much larger:
#: their correlation is 1 / (1 + 2^2) = 0.2.
COUPLING_NOISE = 2.0
Weights = dict[str, torch.Tensor]
Made = tuple[Weights, list[str]]
#: Each disguise group: the derivative's weights and token strings from a fine-tune.
DISGUISES: dict[str, Callable[[Weights, int], Made]] = {
    "rotated": lambda w, s: (disguises.rotate(w, SPEC, seed=s), TOKENS),
    "rotated + 4-bit": lambda w, s: (disguises.quantize_4bit(disguises.rotate(w, SPEC, seed=s)), TOKENS),
    "sliced 12.5%": lambda w, s: (disguises.slice_residual(w, SPEC, remove=0.125), TOKENS),
    "sliced 25%": lambda w, s: (disguises.slice_residual(w, SPEC, remove=0.25), TOKENS),
    "vocabulary shuffled": lambda w, s: disguises.shuffle_vocabulary(w, TOKENS, seed=s),
    "tokens inserted": lambda w, s: disguises.insert_tokens(w, TOKENS, count=100, seed=s),
    "tokenizer swap (80%)": lambda w, s: disguises.swap_tokenizer(
        disguises.rotate(w, SPEC, seed=s), TOKENS, share=0.8, seed=s),
}
DERIVED_BASES = 5
#: Relative noise of the fine-tune under each disguise (1.0: weight and change of equal size).
FINETUNE = 1.0


def structured_base(seed: int) -> Weights:
    """A base with the structure trained models share (module docstring), from its own seed."""
    gen = torch.Generator().manual_seed(1000 + seed)
    w = make_weights(SPEC, seed)
    scale = torch.ones(SPEC.hidden)
    scale[:OUTLIERS] = 4.0
    profile = 1.0 + 2.0 * torch.exp(-torch.arange(SPEC.vocab) / 100.0)
    w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"] * scale * profile[:, None]
    for i in range(SPEC.layers):
        p = f"model.layers.{i}."
        shared = torch.randn(SPEC.intermediate, SPEC.hidden, generator=gen)
        for name in ("mlp.gate_proj", "mlp.up_proj"):
            noise = torch.randn(SPEC.intermediate, SPEC.hidden, generator=gen)
            w[p + f"{name}.weight"] = 0.01 * (shared + COUPLING_NOISE * noise) * scale
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            w[p + f"{name}.weight"] = w[p + f"{name}.weight"] * scale
    return w


def save(directory: Path, made: Made) -> Path:
    """A model directory: weights and a word-level ``tokenizer.json``."""
    save_model(made[0], directory)
    vocab = {t: i for i, t in enumerate(made[1])}
    (directory / "tokenizer.json").write_text(json.dumps(
        {"model": {"type": "WordLevel", "vocab": vocab}, "added_tokens": []}))
    return directory


class Models:
    """Model directories, each opened and fingerprinted once."""

    def __init__(self, root: Path, context: Context) -> None:
        self.root, self.context = root, context
        self.subjects: dict[str, Subject] = {}

    def add(self, name: str, made: Made) -> None:
        path = save(self.root / name, made)
        source = open_model(path)
        self.subjects[name] = Subject(name, path, fingerprint_source(source, samples=2, device="cpu"),
                                      source)

    def compare(self, a: str, b: str):  # type: ignore[no-untyped-def]
        return compare_subjects(self.subjects[a], self.subjects[b], self.context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bases", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = Models(Path(tmp), Context(load_reference(None), 4))
        for i in range(args.bases):
            base = structured_base(i)
            models.add(f"base{i}", (base, TOKENS))
            tuned = finetune(base, FINETUNE, seed=100 + i)
            for g, (group, make) in enumerate(DISGUISES.items()):
                models.add(f"{group}/{i}", make(tuned, 10 * i + g))
        derived_rows, null, signatures = [], [], []
        for group in DISGUISES:
            found = [models.compare(f"base{i}", f"{group}/{i}") for i in range(DERIVED_BASES)]
            labels = Counter(c.verdict.label.value for c in found)
            log_ps = [c.independence.log10_p for c in found if c.independence and c.independence.applicable]
            rhos = [b.rho for c in found if c.independence for b in c.independence.blocks]
            fits = [c.independence.alignment.fit for c in found
                    if c.independence and c.independence.alignment]
            worst = "< -300" if max(log_ps) < -300 else f"{max(log_ps):.1f}"
            signed = [c.evidence["signature"].score for c in found if c.evidence["signature"]]
            derived_rows.append([group, f"{labels['derived']}/{len(found)}", worst,
                                 f"{min(rhos):.2f}", f"{min(fits):.3f}", f"{min(signed):.3f}"])
        n = args.bases
        pairs = [(f"base{i}", f"base{j}", "plain") for i in range(n) for j in range(i + 1, n)]
        pairs += [(f"base{i}", f"{group}/{(i + k) % n}", group) for group in DISGUISES
                  for i in range(n) for k in (1, 2)]
        for a, b, kind in pairs:
            c = models.compare(a, b)
            t = c.independence
            p = t.p_value if t is not None and t.applicable else None
            rho = detectable_rho(t) if t is not None and t.applicable else None
            null.append((kind, c.verdict.label.value, p, rho))
            if c.evidence["signature"] is not None:
                signatures.append(c.evidence["signature"].score)
        for s in models.subjects.values():
            if s.source is not None:
                s.source.close()
    print("derived: each disguise group against its base\n" + table(
        ["disguise", "derived", "worst log10 p", "lowest block rho", "lowest fit", "lowest signature"],
        derived_rows))
    kinds = list(dict.fromkeys(kind for kind, *_ in null))
    rows = [_null_row(kind, [x for x in null if x[0] == kind]) for kind in kinds]
    rows.append(_null_row("all", null))
    print(f"\nnull: {len(null)} pairs of independent models (the second one disguised as named)\n" + table(
        ["pair", "pairs", "derived", "independent", "inconclusive", "smallest p", "p < 0.05",
         "p < 0.01", "KS distance (p)", "deciles of p"], rows))
    print(f"largest detectable rho of a test that did not reject: "
          f"{max(r for *_, r in null if r is not None):.2f}; highest signature similarity: "
          f"{max(signatures):.3f}")


def _null_row(kind: str, found: list[tuple[str, str, float | None, float | None]]) -> list[object]:
    p = np.array([x[2] for x in found if x[2] is not None])
    labels = Counter(x[1] for x in found)
    ks = stats.kstest(p, "uniform")
    deciles = " ".join(f"{q:.2f}" for q in np.quantile(p, np.linspace(0.1, 0.9, 9)))
    return [kind, len(found), labels["derived"], labels["independent"], labels["inconclusive"],
            f"{p.min():.2g}", f"{(p < 0.05).mean():.3f}", f"{(p < 0.01).mean():.3f}",
            f"{ks.statistic:.3f} ({ks.pvalue:.2g})", deciles]


if __name__ == "__main__":
    main()
