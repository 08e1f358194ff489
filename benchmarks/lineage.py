"""Which known base is a model derived from? ``scan`` vs ``predict`` vs ``compare`` on the corpus.

``python benchmarks/lineage.py [--workdir DIR] [--real] [--skip-size] [--rows 10000]``

1. Builds (once) the lineage corpus (``benchmarks/lineage_corpus.py``): 5 tiny bases trained
   from different seeds on different offline text, 14 real derivatives of each, and each base as
   GGUF Q8_0 and Q4_1; with ``--real``, SmolLM2-135M-Instruct and its derivatives too
   (``benchmarks/lineage_real.py``; skipped with the reason when it cannot be downloaded).
2. Catalogues the bases, and for each base a catalogue without it.
3. For every model and every method, the full-catalogue answer (top-1 base) and the answer with
   the model's own base left out (it must be "no known base"); every "derived" that names a base
   the model does not come from is a false derived:

   * ``scan``: ``tensorguard.scan`` (signature retrieval, ``compare`` to confirm);
   * ``predict``: ``FamilyClassifier`` fitted on the catalogued bases and one known fine-tune of
     each (the clustering set ``predict`` needs for its threshold), the default rule;
   * ``compare``: ``compare`` against every catalogued base; the base with the smallest p among
     ``derived`` verdicts.
4. Signature margins per transform (lowest score against the true base, highest against another).
5. The signature's size and time (and the fingerprint's, for scale) on the 2.5 GB 1B-shaped
   benchmark model, each in a fresh process; the retrieve step over ``--rows`` synthetic rows
   (best of 5).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import Case, bench_model, measure  # noqa: E402
from benchmarks.lineage_corpus import (  # noqa: E402
    GGUF_FORMATS,
    TRAINED,
    TRANSFORMS,
    Entry,
    build_corpus,
    build_formats,
    relative_change,
)
from benchmarks.lineage_real import NAME as REAL_NAME  # noqa: E402
from benchmarks.lineage_real import REQUANTIZED, build_real  # noqa: E402
from tensorguard.catalogue import SIGNATURE_THRESHOLD, Answer, Catalogue, scan  # noqa: E402
from tensorguard.catalogue.retrieval import fingerprint_threshold, load_known, rank_candidates  # noqa: E402
from tensorguard.catalogue.store import Row, Store  # noqa: E402
from tensorguard.clustering import FamilyClassifier  # noqa: E402
from tensorguard.fingerprints import FEATURE_KEYS, Fingerprint, fingerprint  # noqa: E402
from tensorguard.lineage import Context, Subject, compare_subjects  # noqa: E402
from tensorguard.lineage.distance import load_reference  # noqa: E402
from tensorguard.loading import open_model  # noqa: E402
from tensorguard.reference import Label  # noqa: E402
from tensorguard.report import table  # noqa: E402
from tensorguard.signatures import Signature, compute_signature, retrieval_vector, similarity  # noqa: E402

NONE = "no known base"
METHODS = ("scan", "predict", "compare")
FORMATS = tuple(dict.fromkeys([*GGUF_FORMATS, *REQUANTIZED]))


@dataclass(frozen=True)
class Outcome:
    """One method on one model: its full-catalogue answer and its answer without the true base."""

    model: str
    transform: str
    method: str
    top1: str | None  # the base named first (derived or closest), None: no known base
    derived: bool  # the answer is "derived" (confirmed) from the true base
    derived_full: str | None  # the base it says "derived" from in the full catalogue
    loo_answer: str  # answer with the true base left out: NONE, or a wrongly named base
    loo_derived: str | None  # a base it says "derived" from without the true base (false)


def catalogues(bases: list[Entry], workdir: Path) -> dict[str | None, Catalogue]:
    """The full catalogue (key None) and one without each base (key: that base); no built-in rows."""
    root = workdir / "lineage-catalogues"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.sqlite*"):
        old.unlink()
    measurer = Catalogue(root / "all.sqlite", builtin=False)
    rows = [measurer.measure(b.path, labels={"base": b.name}, device="cpu") for b in bases]
    out: dict[str | None, Catalogue] = {None: measurer}
    measurer.insert(rows)
    for b in bases:
        out[b.name] = Catalogue(root / f"without-{b.name}.sqlite", builtin=False)
        out[b.name].insert([r for r in rows if r.name != b.name])
    return out


def run_scan(models: list[Entry], cats: dict[str | None, Catalogue]) -> list[Outcome]:
    out = []
    for m in models:
        full = scan(m.path, catalogue=cats[None], device="cpu")
        loo = scan(m.path, catalogue=cats[m.base], device="cpu")
        top1 = full.candidates[0].name if full.candidates else None
        out.append(Outcome(m.name, m.transform, "scan", top1 if full.answer is not Answer.NONE else None,
                           full.answer is Answer.DERIVED and full.base == m.base,
                           full.base if full.answer is Answer.DERIVED else None,
                           NONE if loo.answer is Answer.NONE else f"{loo.answer.value}: {loo.base}",
                           loo.base if loo.answer is Answer.DERIVED else None))
    return out


def run_predict(models: list[Entry], bases: list[Entry], fps: dict[str, Fingerprint]) -> list[Outcome]:
    tuned = {b.name: f"{b.name}--finetune" for b in bases}

    def fit(without: str | None) -> FamilyClassifier:
        kept = [b.name for b in bases if b.name != without]
        members = [fps[n] for n in kept] + [fps[tuned[n]] for n in kept]
        labels = {n: Label(n) for n in kept} | {tuned[n]: Label(n) for n in kept}
        return FamilyClassifier(centers=kept).fit(members, labels)

    full = fit(None)
    by_base = defaultdict(list)
    for m in models:
        by_base[m.base].append(m)
    out = []
    for base, group in by_base.items():
        loo = fit(base)
        full_p = full.predict([fps[m.name] for m in group])
        loo_p = loo.predict([fps[m.name] for m in group])
        for m, pf, pl in zip(group, full_p, loo_p, strict=True):
            top1 = pf.verdict if pf.verdict != "unknown" else None
            out.append(Outcome(m.name, m.transform, "predict", top1, False, None,
                               NONE if pl.verdict == "unknown" else f"base: {pl.verdict}", None))
    return out


def run_compare(models: list[Entry], bases: list[Entry], fps: dict[str, Fingerprint]) -> list[Outcome]:
    """Every model against every base (fingerprints computed once, reused)."""
    context = Context(load_reference(None), 4)
    out = []
    for m in models:
        derived: dict[str, float] = {}
        with open_model(m.path) as ms:
            for b in bases:
                if b.name == m.name:
                    continue
                with open_model(b.path) as bs:
                    c = compare_subjects(Subject(b.name, Path(b.path), fps[b.name], bs),
                                         Subject(m.name, Path(m.path), fps[m.name], ms), context)
                if c.verdict.label.value in ("derived", "same weights"):
                    derived[b.name] = c.verdict.p_value if c.verdict.p_value is not None else 0.0
        best = min(derived, key=lambda n: (derived[n], n)) if derived else None
        wrong = sorted(n for n in derived if n != m.base)
        if m.transform == "base":  # a base compared with the others only
            best = m.base if not derived else best
        out.append(Outcome(m.name, m.transform, "compare", best, best == m.base and bool(derived), best,
                           NONE if not wrong else f"derived: {wrong[0]}", wrong[0] if wrong else None))
    return out


#: Column legend of ``summary_table`` (printed with it).
LEGEND = ("top1: the base named first is the true one; drv: the answer is a confirmed `derived` from "
          "the true base; LOO: with the true base left out of the catalogue, the answer is `no known "
          "base` (predict: `unknown`); false: `derived` answers naming a wrong base, over both runs, "
          "for scan / predict / compare")


def summary_table(models: list[Entry], outcomes: list[Outcome]) -> str:
    present = {m.transform for m in models}
    transforms = [t for t in ["base", *TRANSFORMS, *FORMATS] if t in present]
    by = {(o.method, o.model): o for o in outcomes}
    rows = []
    for t in [*transforms, "all"]:
        group = [m for m in models if t in ("all", m.transform)]
        row: list[object] = [t, len(group)]
        false = []
        for method in METHODS:
            results = [by[method, m.name] for m in group]
            top1 = sum(o.top1 == m.base for o, m in zip(results, group, strict=True))
            loo = sum(o.loo_answer == NONE for o in results)
            false.append(sum((o.derived_full not in (None, m.base)) + (o.loo_derived is not None)
                             for o, m in zip(results, group, strict=True)))
            said = sum(o.derived for o in results)
            n = len(group)
            row += [f"{top1}/{n}", *([f"{said}/{n}"] if method != "predict" else []), f"{loo}/{n}"]
        rows.append([*row, " / ".join(map(str, false))])
    headers = ["transform", "models", "scan top1", "scan drv", "scan LOO", "predict top1", "predict LOO",
               "compare top1", "compare drv", "compare LOO", "false"]
    return table(headers, rows)


def margins(models: list[Entry], bases: list[Entry], sigs: dict[str, Signature]) -> str:
    """Per transform: the lowest signature similarity of a derivative to its true base and the
    highest to another base, for the score and for its embedding part alone."""
    rows = []
    lowest, highest, apart = 1.0, -1.0, 0
    transforms = [t for t in ["base", *TRANSFORMS, *FORMATS] if any(m.transform == t for m in models)]
    for t in transforms:
        own: list[float] = []
        other: list[float] = []
        own_embed: list[float] = []
        other_embed: list[float] = []
        for m in (m for m in models if m.transform == t):
            for b in bases:
                if b.name == m.name:
                    continue
                s = similarity(sigs[b.name], sigs[m.name])
                if not np.isfinite(s.score):  # no token in common (another tokenizer): not comparable
                    apart += 1
                    continue
                (own if b.name == m.base else other).append(s.score)
                (own_embed if b.name == m.base else other_embed).append(s.embed if s.embed is not None else 0)
        rows.append([t] + [f"{f(v):.3f}" if v else "-" for f, v in ((min, own), (max, other),
                                                                     (min, own_embed), (max, other_embed))])
        lowest, highest = min([lowest, *own]), max([highest, *other])
    return (table(["transform", "lowest vs true base", "highest vs another base",
                   "embed part: lowest", "embed part: highest"], rows)
            + f"\ngap: every derivative >= {lowest:.3f}, every independent pair <= {highest:.3f}; "
              f"midpoint {(lowest + highest) / 2:.3f} (SIGNATURE_THRESHOLD = {SIGNATURE_THRESHOLD}); "
              f"{apart} pairs share no token (different tokenizers) and cannot be compared")


def _weights(path: str) -> dict[str, torch.Tensor]:
    with open_model(path) as source:
        return {name: source.read(name, torch.float32) for name in source.tensors}


def moved(models: list[Entry], bases: list[Entry]) -> str:
    """How far training moved each trained derivative's block matrices from its base's."""
    rows = []
    for group in ([b for b in bases if b.name != REAL_NAME], [b for b in bases if b.name == REAL_NAME]):
        if not group:
            continue
        base_weights = {b.name: _weights(b.path) for b in group}
        for t in TRAINED:
            changes = [relative_change(base_weights[m.base], _weights(m.path))
                       for m in models if m.transform == t and m.base in base_weights]
            rows.append([REAL_NAME if group[0].name == REAL_NAME else "tiny bases", t,
                         f"{min(changes):.0%} to {max(changes):.0%}"])
    return table(["models", "transform", "block matrices moved (|W' - W| / |W|)"], rows)


def size_and_time(workdir: Path) -> str:
    model = bench_model(workdir)
    code = ("import sys, torch; torch.set_num_threads(1); from tensorguard.loading import open_model; "
            "from tensorguard.{mod} import {fn}; s = open_model(sys.argv[1]); r = {fn}(s{args})")
    cases = [
        Case("size", "signature (compute_signature)", [sys.executable, "-c", code.format(
            mod="signatures", fn="compute_signature", args=""), str(model)]),
        Case("size", "fingerprint (fingerprint_source, cpu)", [sys.executable, "-c", code.format(
            mod="fingerprints", fn="fingerprint_source", args=", device='cpu'"), str(model)]),
    ]
    # twice: the first run may find the 2.5 GB file out of the page cache (the signature reads all of it)
    rows = [[f"{m.case.label}, run {run}", round(m.wall_s, 2), round(m.peak_mb)]
            for run in (1, 2) for m in map(measure, cases)]
    sig = compute_signature(model)
    tokens, vector = retrieval_vector(sig)
    return (table(["what", "wall s", "peak MB"], rows)
            + f"\nsignature of {model.name}: {sig.nbytes:,} bytes ({len(sig.block_index)} blocks x "
              f"{len(sig.kinds)} kinds x {sig.block_tokens}^2 + embedding {len(sig.tokens)}^2, float16); "
              f"retrieval vector {vector.nbytes:,} bytes over {len(tokens)} tokens")


def retrieval_speed(workdir: Path, rows: int, sig: Signature, fp: Fingerprint, runs: int = 5) -> str:
    """Scan's retrieve step (open the file, read every row, rank, compare the shortlist in full)
    over ``rows`` synthetic rows (random retrieval vectors in 4 token lists, random fingerprints,
    a real tiny signature each) plus the 43 built-in ones."""
    db = workdir / f"lineage-synthetic-{rows}.sqlite"
    for old in workdir.glob(db.name + "*"):
        old.unlink()
    rng = np.random.default_rng(0)
    tokens, vector = retrieval_vector(sig)
    lists = [tokens] + [tuple(f"{t}{k}" if i % 7 == 0 else t for i, t in enumerate(tokens)) for k in range(3)]
    blob = sig.to_bytes()
    batch = []
    for i in range(rows):
        v = rng.normal(size=vector.size).astype(np.float32)
        v = (v - v.mean()) / np.linalg.norm(v - v.mean())
        scaled = np.asarray(list(fp.features.values())) * rng.uniform(0.5, 2, len(fp.features))
        row_fp = {**fp.to_dict(), **dict(zip(fp.features, scaled.tolist(), strict=True)),
                  "model_name": f"synthetic-{i:05d}"}
        batch.append(Row(f"synthetic-{i:05d}", {"base": f"synthetic-{i:05d}"}, None, None, None, row_fp,
                         np.array([row_fp[k] for k in FEATURE_KEYS], dtype="<f8").tobytes(), blob,
                         lists[i % len(lists)], v.astype(np.float16).tobytes(), "2026-01-01T00:00:00"))
    with Store.open(db, writable=True) as store:
        store.put(batch, replace=False)
    reference = load_reference(None)
    limit = fingerprint_threshold(reference)
    timings: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        start = time.perf_counter()
        with Store.open(db) as store:
            known = load_known(store, builtin=True)
            loaded = time.perf_counter()
            rank_candidates(sig, fp, known, store, reference, limit)
        end = time.perf_counter()
        timings["total"].append(end - start)
        timings["read"].append(loaded - start)
        timings["rank"].append(end - loaded)
    best = {k: min(v) for k, v in timings.items()}
    return (f"retrieve over {len(known.names):,} rows ({rows:,} synthetic + 43 built-in; 4 token lists; "
            f"{db.stat().st_size / 1e6:.0f} MB file): best of {runs} {best['total']:.3f} s "
            f"(read {best['read']:.3f} s, rank {best['rank']:.3f} s; all runs: "
            f"{', '.join(f'{t:.3f}' for t in timings['total'])})")


def _timed(label: str, work: Callable[[], list[Outcome]]) -> list[Outcome]:
    start = time.perf_counter()
    done = work()
    print(f"{label}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / ".data")
    parser.add_argument("--real", action="store_true", help="add SmolLM2-135M and its derivatives")
    parser.add_argument("--skip-size", action="store_true", help="skip the 1B-model size/time run")
    parser.add_argument("--rows", type=int, default=10_000, help="synthetic catalogue rows (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = build_corpus(args.workdir)
    bases = [m for m in models if m.transform == "base"]
    models += build_formats(args.workdir, bases)
    real = build_real(args.workdir) if args.real else "not asked for (--real)"
    if isinstance(real, list):
        models += real
        bases += [m for m in real if m.transform == "base"]
    print(f"corpus: {len(bases)} bases, {len(models) - len(bases)} derivatives; {REAL_NAME}: "
          f"{'included' if isinstance(real, list) else real}", file=sys.stderr)
    cats = catalogues(bases, args.workdir)
    fps = {m.name: fingerprint(m.path, device="cpu") for m in models}
    outcomes = _timed("scan", lambda: run_scan(models, cats))
    outcomes += _timed("predict", lambda: run_predict(models, bases, fps))
    outcomes += _timed("compare", lambda: run_compare(models, bases, fps))
    tiny = [m for m in models if m.base != REAL_NAME]
    print("tiny corpus (5 bases, each catalogued with the others"
          + (f" and {REAL_NAME}" if isinstance(real, list) else "") + "):")
    print(summary_table(tiny, outcomes))
    print(LEGEND)
    if isinstance(real, list):
        print(f"\n{REAL_NAME} (catalogued with the 5 tiny bases):")
        print(summary_table([m for m in models if m.base == REAL_NAME], outcomes))
    else:
        print(f"\n{REAL_NAME}: skipped ({real})")
    print("\n" + moved(models, bases))
    sigs = {m.name: compute_signature(m.path) for m in models}
    print(f"\nsignature threshold {SIGNATURE_THRESHOLD}; signature similarity margins:")
    print(margins(models, bases, sigs))
    for o in outcomes:
        base = next(m.base for m in models if m.name == o.model)
        if o.top1 != base or o.loo_answer != NONE:
            print(f"  {o.method}: {o.model}: top-1 {o.top1}, without its base: {o.loo_answer}")
    if args.rows:
        probe = bases[0]
        print("\n" + retrieval_speed(args.workdir, args.rows, sigs[probe.name], fps[probe.name]))
    if not args.skip_size:
        print("\n" + size_and_time(args.workdir))


if __name__ == "__main__":
    main()
