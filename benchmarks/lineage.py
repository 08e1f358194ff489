"""Which known base is a model derived from? ``scan`` vs ``predict`` vs ``compare`` on the corpus.

``python benchmarks/lineage.py [--workdir DIR] [--skip-size] [--rows 10000]``

1. Builds (once) the lineage corpus (``benchmarks/lineage_corpus.py``): 5 tiny bases trained
   from different seeds on different offline text, and 14 real derivatives of each.
2. Catalogues the 5 bases (``index add``), and for each base a catalogue without it.
3. For every model and every method, the full-catalogue answer (top-1 base) and the answer with
   the model's own base left out (it must be "no known base"); every "derived" that names a base
   the model does not come from is a false derived:

   * ``scan``: ``tensorguard.scan.scan_model`` (signature retrieval, compare to confirm);
   * ``predict``: ``tensorguard predict`` with clusters fitted on the catalogued bases and one
     known fine-tune of each (the clustering set ``predict`` needs for its threshold);
   * ``compare``: ``compare`` against every catalogued base; the base with the smallest p among
     ``derived`` verdicts.
4. Signature margins per transform (lowest score against the true base, highest against another).
5. The signature's size and time (and the fingerprint's, for scale) on the 2.5 GB 1B-shaped
   benchmark model, each in a fresh process; retrieval over a catalogue of ``--rows`` synthetic
   rows.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import Case, bench_model, measure  # noqa: E402
from benchmarks.lineage_corpus import REAL_MODELS, TRANSFORMS, Entry, build_corpus  # noqa: E402
from tensorguard import clustermodel  # noqa: E402
from tensorguard.catalogue import add_models  # noqa: E402
from tensorguard.catalogue.store import Row, Store  # noqa: E402
from tensorguard.compare import Options, compare_models  # noqa: E402
from tensorguard.features import FEATURE_KEYS  # noqa: E402
from tensorguard.fingerprint import fingerprint_model  # noqa: E402
from tensorguard.loading import open_model  # noqa: E402
from tensorguard.report import table  # noqa: E402
from tensorguard.scan import SIGNATURE_THRESHOLD, Answer, scan_model  # noqa: E402
from tensorguard.signature import retrieval_vector, signature_of, similarity  # noqa: E402

NONE = "no known base"
METHODS = ("scan", "predict", "compare")


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


def catalogues(bases: list[Entry], workdir: Path) -> dict[str | None, Path]:
    """The full catalogue (key None) and one without each base (key: that base)."""
    root = workdir / "lineage-catalogues"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    full = root / "all.sqlite"
    for b in bases:
        add_models([b.path], db=full, labels={"base": b.name}, device="cpu")
    out: dict[str | None, Path] = {None: full}
    for b in bases:
        copy = root / f"without-{b.name}.sqlite"
        with Store.open(full) as store:
            rows: list[Row] = store.all()
        with Store.open(copy, writable=True) as store:
            store.put([r for r in rows if r.name != b.name], replace=False)
        out[b.name] = copy
    return out


def run_scan(models: list[Entry], dbs: dict[str | None, Path]) -> list[Outcome]:
    out = []
    for m in models:
        full = scan_model(m.path, db=dbs[None], builtin=False, device="cpu")
        loo = scan_model(m.path, db=dbs[m.base], builtin=False, device="cpu")
        top1 = full.candidates[0].name if full.candidates else None
        out.append(Outcome(m.name, m.transform, "scan", top1 if full.answer is not Answer.NONE else None,
                           full.answer is Answer.DERIVED and full.base == m.base,
                           full.base if full.answer is Answer.DERIVED else None,
                           NONE if loo.answer is Answer.NONE else f"{loo.answer.value}: {loo.base}",
                           loo.base if loo.answer is Answer.DERIVED else None))
    return out


def run_predict(models: list[Entry], bases: list[Entry]) -> list[Outcome]:
    fps = {m.name: _fingerprint(m.path) for m in models}
    tuned = {b.name: f"{b.name}--finetune" for b in bases}

    def fit(without: str | None) -> clustermodel.ClusterModel:
        kept = [b.name for b in bases if b.name != without]
        members = [fps[n] for n in kept] + [fps[tuned[n]] for n in kept]
        return clustermodel.fit(members, kept)

    full = fit(None)
    models_by_base = defaultdict(list)
    for m in models:
        models_by_base[m.base].append(m)
    out = []
    for base, group in models_by_base.items():
        loo = fit(base)
        full_p = clustermodel.predict(full, [fps[m.name] for m in group])
        loo_p = clustermodel.predict(loo, [fps[m.name] for m in group])
        for m, pf, pl in zip(group, full_p, loo_p):
            top1 = pf.verdict if pf.verdict != "unknown" else None
            out.append(Outcome(m.name, m.transform, "predict", top1, False, None,
                               NONE if pl.verdict == "unknown" else f"family: {pl.verdict}", None))
    return out


def _fingerprint(path: str):
    with open_model(path) as source:
        return fingerprint_model(source, device="cpu")


def run_compare(models: list[Entry], bases: list[Entry]) -> list[Outcome]:
    options = Options(device="cpu")
    out = []
    for m in models:
        derived: dict[str, float] = {}
        for b in bases:
            if b.name == m.name:
                continue
            c = compare_models(b.path, m.path, options)
            if c.verdict.label in ("derived", "same weights"):
                derived[b.name] = c.verdict.p_value if c.verdict.p_value is not None else 0.0
        best = min(derived, key=lambda n: (derived[n], n)) if derived else None
        wrong = sorted(n for n in derived if n != m.base)
        if m.transform == "base":  # a base compared with the others only
            best = m.base if not derived else best
        out.append(Outcome(m.name, m.transform, "compare", best, best == m.base and bool(derived), best,
                           NONE if not wrong else f"derived: {wrong[0]}", wrong[0] if wrong else None))
    return out


def summary_table(models: list[Entry], outcomes: list[Outcome]) -> str:
    transforms = ["base", *TRANSFORMS]
    by = {(o.method, o.model): o for o in outcomes}
    rows = []
    for t in [*transforms, "all"]:
        group = [m for m in models if t in ("all", m.transform)]
        row: list[object] = [t, len(group)]
        for method in METHODS:
            results = [by[method, m.name] for m in group]
            top1 = sum(o.top1 == m.base for o, m in zip(results, group))
            loo = sum(o.loo_answer == NONE for o in results)
            false = sum((o.derived_full not in (None, m.base)) + (o.loo_derived is not None)
                        for o, m in zip(results, group))
            said = sum(o.derived for o in results)
            row += [f"{top1}/{len(group)}"] + ([f"{said}/{len(group)}"] if method != "predict" else [])
            row += [f"{loo}/{len(group)}", false]
        rows.append(row)
    headers = ["transform", "models"]
    for m in METHODS:
        headers += [f"{m} top-1"] + ([f"{m} derived"] if m != "predict" else [])
        headers += [f"{m} no base (LOO)", f"{m} false derived"]
    return table(headers, rows)


def margins(models: list[Entry], bases: list[Entry]) -> str:
    sigs = {m.name: signature_of(m.path) for m in models}
    rows = []
    lowest, highest = 1.0, -1.0
    for t in ["base", *TRANSFORMS]:
        own, other = [], []
        for m in (m for m in models if m.transform == t):
            for b in bases:
                if b.name == m.name:
                    continue
                s = similarity(sigs[b.name], sigs[m.name]).score
                (own if b.name == m.base else other).append(s)
        rows.append([t, round(min(own), 3) if own else "-", round(max(other), 3)])
        lowest, highest = min([lowest, *own]), max([highest, *other])
    return (table(["transform", "lowest vs true base", "highest vs another base"], rows)
            + f"\ngap: every derivative >= {lowest:.3f}, every independent pair <= {highest:.3f}; "
              f"midpoint {(lowest + highest) / 2:.3f} (SIGNATURE_THRESHOLD = {SIGNATURE_THRESHOLD})")


def size_and_time(workdir: Path) -> str:
    model = bench_model(workdir)
    code = ("import sys, torch; torch.set_num_threads(1); from tensorguard.loading import open_model; "
            "from tensorguard.{mod} import {fn}; s = open_model(sys.argv[1]); r = {fn}(s{args}); "
            "print(len(r.to_bytes()) if hasattr(r, 'to_bytes') else '', file=sys.stderr)")
    cases = [
        Case("size", "signature (compute_signature)", [sys.executable, "-c", code.format(
            mod="signature", fn="compute_signature", args=""), str(model)]),
        Case("size", "fingerprint (fingerprint_model, cpu)", [sys.executable, "-c", code.format(
            mod="fingerprint", fn="fingerprint_model", args=", device='cpu'"), str(model)]),
    ]
    rows = [[m.case.label, round(m.wall_s, 2), round(m.peak_mb)] for m in map(measure, cases)]
    with open_model(model) as source:
        from tensorguard.signature import compute_signature

        sig = compute_signature(source)
    tokens, vector = retrieval_vector(sig)
    return (table(["what", "wall s", "peak MB"], rows)
            + f"\nsignature of {model.name}: {sig.nbytes:,} bytes ({len(sig.block_index)} blocks x "
              f"{len(sig.kinds)} kinds x {sig.block_tokens}^2 + embedding {len(sig.tokens)}^2, float16); "
              f"retrieval vector {vector.nbytes:,} bytes over {len(tokens)} tokens")


def retrieval_speed(workdir: Path, rows: int, probe: Entry) -> str:
    """Scan's retrieve step over ``rows`` synthetic rows (random retrieval vectors in 4 token
    lists, random fingerprints, a real tiny signature blob each)."""
    from tensorguard.compare.distance import load_reference
    from tensorguard.scan import _load, fingerprint_threshold, rank_candidates

    sig = signature_of(probe.path)
    fp = _fingerprint(probe.path)
    tokens, vector = retrieval_vector(sig)
    db = workdir / f"lineage-synthetic-{rows}.sqlite"
    db.unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    lists = [tokens] + [tuple(f"{t}{k}" if i % 7 == 0 else t for i, t in enumerate(tokens))
                        for k in range(3)]
    blob = sig.to_bytes()
    batch = []
    for i in range(rows):
        v = rng.normal(size=vector.size).astype(np.float32)
        v = (v - v.mean()) / np.linalg.norm(v - v.mean())
        feats = dict(zip(fp.features, np.asarray(list(fp.features.values())) * rng.uniform(0.5, 2, 14)))
        row_fp = {**fp.to_dict(), **feats, "model_name": f"synthetic-{i:05d}"}
        batch.append(Row(f"synthetic-{i:05d}", {"base": f"synthetic-{i:05d}"}, None, None, None, row_fp,
                         np.array([row_fp[k] for k in FEATURE_KEYS], dtype="<f8").tobytes(), blob,
                         lists[i % len(lists)], v.astype(np.float16).tobytes(), "2026-01-01T00:00:00"))
    with Store.open(db, writable=True) as store:
        store.put(batch, replace=False)
    timings = []
    reference = load_reference(None)
    for _ in range(3):
        start = time.perf_counter()
        with Store.open(db) as store:
            known = _load(store, builtin=True)
            rank_candidates(sig, fp, known, store, reference, fingerprint_threshold(reference))
        timings.append(time.perf_counter() - start)
    return (f"retrieve over {len(known.names):,} rows ({rows:,} synthetic + 43 built-in; 4 token lists; "
            f"{db.stat().st_size / 1e6:.0f} MB file): best of 3 {min(timings):.3f} s "
            f"(runs: {', '.join(f'{t:.3f}' for t in timings)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / ".data")
    parser.add_argument("--skip-size", action="store_true", help="skip the 1B-model size/time run")
    parser.add_argument("--rows", type=int, default=10_000, help="synthetic catalogue rows (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = build_corpus(args.workdir)
    bases = [m for m in models if m.transform == "base"]
    print(f"corpus: {len(bases)} bases, {len(models) - len(bases)} derivatives "
          f"({', '.join(TRANSFORMS)})", file=sys.stderr)
    dbs = catalogues(bases, args.workdir)
    outcomes = []
    for method, run in (("scan", lambda: run_scan(models, dbs)),
                        ("predict", lambda: run_predict(models, bases)),
                        ("compare", lambda: run_compare(models, bases))):
        start = time.perf_counter()
        outcomes += run()
        print(f"{method}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(summary_table(models, outcomes))
    print(f"\nsignature threshold {SIGNATURE_THRESHOLD}; signature similarity margins:")
    print(margins(models, bases))
    for o in outcomes:
        base = next(m.base for m in models if m.name == o.model)
        if o.top1 != base or o.loo_answer != NONE:
            print(f"  {o.method}: {o.model}: top-1 {o.top1}, without its base: {o.loo_answer}")
    for real in REAL_MODELS:
        print(f"\n{real.name} ({real.package}): {real.status}")
    if args.rows:
        print("\n" + retrieval_speed(args.workdir, args.rows, bases[0]))
    if not args.skip_size:
        print("\n" + size_and_time(args.workdir))


if __name__ == "__main__":
    main()
