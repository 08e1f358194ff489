"""``tensorguard compare``: a pair in detail, or several models as matrices with figures; the
text report of each signal."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from tensorguard.lineage import SIGNALS, Comparison, ComparisonMatrix, compare_all
from tensorguard.lineage.distance import FingerprintDistance
from tensorguard.lineage.independence import IndependenceTest
from tensorguard.lineage.verdict import format_p
from tensorguard.lineage.weights import WeightEvidence
from tensorguard.outputs import check_writable
from tensorguard.report import fmt, table, to_jsonable
from tensorguard.signatures import SignatureSimilarity

DENDROGRAM = "similarity_dendrogram.png"
_LISTED = 5  # tensor names listed before "and N more"


def planned_plots(directory: str | Path) -> list[Path]:
    """Every figure ``compare_inputs`` may write into ``directory``."""
    directory = Path(directory)
    matrices = [signal.matrix for signal in SIGNALS.values()]
    return [directory / f"similarity_{m}.png" for m in matrices] + [directory / DENDROGRAM]


def write_plots(result: ComparisonMatrix, directory: str | Path, *, force: bool = False) -> list[Path]:
    """Heatmaps of the signals measured for at least one pair, and the fingerprint dendrogram."""
    from tensorguard.plots import save_png
    from tensorguard.plots.similarity import dendrogram, heatmap, measured

    directory = Path(directory)
    written = [save_png(heatmap(s, result.models), directory / f"similarity_{s.signal}.png",
                        force=force) for s in measured(result)]
    fingerprint = next(s for s in result.signals if s.signal == SIGNALS["fingerprint"].matrix)
    written.append(save_png(dendrogram(fingerprint, result.models), directory / DENDROGRAM,
                            force=force))
    return written


def compare_inputs(inputs: Sequence[str | Path], *, plot_dir: str | Path | None = None,
                   force: bool = False, **options: Any) -> Comparison | ComparisonMatrix:
    """A pair's ``Comparison``, or for three or more inputs the ``ComparisonMatrix`` with its
    figures written to ``plot_dir`` (none when ``None``). ``options`` go to ``compare_all``."""
    if len(inputs) > 2 and plot_dir is not None:
        for path in planned_plots(plot_dir):  # before any slow work
            check_writable(path, force=force)
    result = compare_all(inputs, **options)
    if len(inputs) == 2:
        return result.comparisons[0]
    if plot_dir is None:
        return result
    return dataclasses.replace(result, plots=[str(p) for p in write_plots(result, plot_dir,
                                                                           force=force)])


# ---- text ---------------------------------------------------------------------------------------

def _names(names: tuple[str, ...]) -> str:
    more = f", and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _distance(d: FingerprintDistance) -> list[str]:
    if d.distance is None:
        return [f"fingerprint distance: not applicable ({d.reason})"]
    lines = [f"fingerprint distance: {d.distance:.4g} (features standardised over "
             f"{d.reference_models} reference models in {d.reference})"]
    for what, pct, pairs in (("same-base", d.same_base_percentile, d.same_base_pairs),
                             ("different-family", d.different_family_percentile,
                              d.different_family_pairs)):
        if pct is not None:
            lines.append(f"  {pct:.0f}% of {pairs} {what} reference pairs are at most this far apart")
    return lines


def _weights(w: WeightEvidence) -> list[str]:
    if not w.applicable:
        return [f"weights: not applicable ({w.reason})"]
    cast = f", after casts {', '.join(w.casts)}" if w.casts else ""
    lines = [f"weights: {w.shared_tensors} shared tensors, {w.identical_tensors} identical{cast} "
             f"({100 * (w.identical_share or 0.0):.1f}% of parameters); median cosine of shared "
             f"matrices {fmt(w.matrix_cosine)}"]
    rows = [[r, c.tensors, c.median, c.q25, c.q75, c.min, c.max] for r, c in w.roles.items()]
    lines += ["  " + line for line in
              table(["role", "tensors", "median cos", "q25", "q75", "min", "max"], rows).splitlines()]
    for label, names in (("only in A", w.only_in_a), ("only in B", w.only_in_b)):
        if names:
            lines.append(f"  {label}: {len(names)} tensors ({_names(names)})")
    for t in w.shape_mismatches:
        how = (f"compared over {t.rows:,} shared rows: cosine {t.cosine:.4f}" if t.rows is not None
               else "not compared")
        lines.append(f"  shape differs: {t.name} {list(t.shape_a)} vs {list(t.shape_b)} ({how})")
    return lines


def _test(t: IndependenceTest) -> list[str]:
    if not t.applicable or t.alignment is None:
        return [f"independence test: not applicable ({t.reason})"]
    al = t.alignment
    lines = [f"independence test: residual basis mapped by {al.method} Procrustes over {al.rows:,} "
             f"embedding rows paired by {al.rows_by} ({al.matrix_a} / {al.matrix_b}, fit {al.fit:.3f})"]
    rows = [[b.block_a, b.block_b, b.neurons_a, b.neurons_b, f"{b.rho:.3f}", format_p(b.log10_p)]
            + ([b.candidates] if b.candidates > 1 else []) for b in t.blocks]
    headers = ["block A", "block B", "neurons A", "neurons B", "rho", "p"]
    if any(b.candidates > 1 for b in t.blocks):
        headers.append("candidates")
    lines += ["  " + line for line in table(headers, rows).splitlines()]
    lines.append(f"  combined (Fisher): {format_p(t.log10_p or 0.0)}")
    return lines


def _signature(s: SignatureSimilarity) -> list[str]:
    embed = (f"embedding {s.embed:.3f} over {s.shared_tokens} shared tokens" if s.embed is not None
             else "no embedding part")
    kinds = ", ".join(f"{k} {v:.3f}" for k, v in sorted(s.kinds.items()))
    return [f"weight signature: similarity {s.score:.3f} ({embed}; {len(s.pairs)} block pairs"
            f"{': ' + kinds if kinds else ''})"]


#: How each signal reads in text; a signal without an entry is shown as its JSON fields.
RENDERERS: dict[str, Callable[[Any], list[str]]] = {
    "fingerprint": _distance, "weights": _weights, "independence": _test, "signature": _signature}


def _evidence(name: str, evidence: Any) -> list[str]:
    if evidence is None:
        return [f"{SIGNALS[name].title}: not applicable (a fingerprint file has no weights)"]
    if name in RENDERERS:
        return RENDERERS[name](evidence)
    return [f"{name}:", *(f"  {k}: {v}" for k, v in to_jsonable(evidence).items())]


def render_pair(c: Comparison) -> str:
    """One pair in detail: verdict first, then each signal."""
    head = [f"A: {c.model_a} ({c.inputs[0]})", f"B: {c.model_b} ({c.inputs[1]})",
            *(f"note: {n}" for n in c.notes), f"verdict: {c.verdict.label}: {c.verdict.reason}", ""]
    body = [line for name, evidence in c.evidence.items() for line in _evidence(name, evidence)]
    return "\n".join([*head, *body]) + "\n"


def render_matrix(m: ComparisonMatrix) -> str:
    """Every signal as a matrix, then one verdict line per pair."""
    lines = ["models:"] + [f"  [{i}] {name}" for i, name in enumerate(m.models)]
    lines += [f"note: {n}" for n in m.notes]
    for s in m.signals:
        rows = [[f"[{i}]", *("-" if v is None else f"{v:.3g}" for v in row)]
                for i, row in enumerate(s.values)]
        lines += ["", f"{s.signal}: {s.description}",
                  table(["", *(f"[{i}]" for i in range(len(m.models)))], rows)]
    lines += ["", "verdicts:"]
    pairs = combinations(range(len(m.models)), 2)  # the order of m.comparisons
    lines += [f"  [{i}] vs [{j}]: {c.verdict.label}: {c.verdict.reason}"
              for (i, j), c in zip(pairs, m.comparisons, strict=True)]
    if m.plots:
        lines += ["", "plots:", *(f"  {p}" for p in m.plots)]
    return "\n".join(lines) + "\n"


def render_text(result: Comparison | ComparisonMatrix) -> str:
    """The text report of a pair or of a matrix."""
    return render_pair(result) if isinstance(result, Comparison) else render_matrix(result)
