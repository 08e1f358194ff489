"""``tensorguard compare``: every signal for a pair of models, and the matrices for several."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from tensorguard.compare.distance import FingerprintDistance, Reference, fingerprint_distance, load_reference
from tensorguard.compare.independence import IndependenceTest, independence_test
from tensorguard.compare.verdict import Verdict, decide
from tensorguard.compare.weights import WeightEvidence, weight_evidence
from tensorguard.errors import TensorguardError
from tensorguard.features import Fingerprint, load_fingerprint
from tensorguard.loading import ModelSource, open_model


@dataclass(frozen=True)
class Options:
    """How to compare: the reference population, probed blocks, fingerprinting settings."""

    reference: str | Path | None = None
    blocks: int = 4
    num_samples: int = 15
    device: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class Subject:
    """One argument: a model (with its computed fingerprint) or a fingerprint file alone."""

    name: str
    path: Path
    fingerprint: Fingerprint
    source: ModelSource | None

    @property
    def kind(self) -> str:
        return "fingerprint" if self.source is None else "model"


def is_fingerprint_file(path: Path) -> bool:
    """A ``.json`` file that is not a safetensors index is read as a fingerprint."""
    return path.is_file() and path.suffix == ".json" and not path.name.endswith(".index.json")


def open_input(path: str | Path) -> Fingerprint | ModelSource:
    """Load a fingerprint file or open a model (headers only), with one-line errors."""
    path = Path(path)
    return load_fingerprint(path) if is_fingerprint_file(path) else open_model(path)


def make_subject(opened: Fingerprint | ModelSource, path: str | Path, options: Options) -> Subject:
    """A subject from an opened input; a model is fingerprinted here (the slow part)."""
    if isinstance(opened, Fingerprint):
        return Subject(opened.model_name, Path(path), opened, None)
    from tensorguard.fingerprint import fingerprint_model

    fp = fingerprint_model(opened, num_samples=options.num_samples, device=options.device,
                           seed=options.seed)
    return Subject(opened.name, Path(path), fp, opened)


@dataclass(frozen=True)
class Comparison:
    """Everything ``compare`` found about one pair; signals that could not run are ``None``."""

    model_a: str
    model_b: str
    inputs: tuple[str, str]  # model | fingerprint
    verdict: Verdict
    fingerprint: FingerprintDistance
    weights: WeightEvidence | None
    independence: IndependenceTest | None


def compare_subjects(a: Subject, b: Subject, reference: Reference, blocks: int = 4) -> Comparison:
    """All signals for an opened pair, and the verdict."""
    distance = fingerprint_distance(a.fingerprint, b.fingerprint, reference)
    weights = test = None
    if a.source is not None and b.source is not None:
        weights = weight_evidence(a.source, b.source)
        test = independence_test(a.source, b.source, blocks)
    return Comparison(a.name, b.name, (a.kind, b.kind), decide(distance, weights, test), distance,
                      weights, test)


def _check_options(paths: Sequence[str | Path], options: Options) -> None:
    if len(paths) < 2:
        raise TensorguardError("compare needs at least two models or fingerprints")
    if options.blocks < 1:
        raise TensorguardError(f"--blocks {options.blocks}: must be at least 1")


def compare_models(a: str | Path, b: str | Path, options: Options | None = None) -> Comparison:
    """Compare two models or fingerprint files (see ``Options``)."""
    return compare_many([a, b], options).comparisons[0]


@dataclass(frozen=True)
class SignalMatrix:
    """One signal for every pair; ``None`` where it does not apply."""

    signal: str  # fingerprint | cosine | independence
    description: str
    higher_is_closer: bool
    values: list[list[float | None]]


@dataclass(frozen=True)
class ComparisonMatrix:
    """``compare`` over several inputs: per-signal matrices and each pair's comparison."""

    models: list[str]
    signals: list[SignalMatrix]
    comparisons: list[Comparison]
    plots: list[str]


def _matrices(n: int, comparisons: dict[tuple[int, int], Comparison]) -> list[SignalMatrix]:
    def fill(diagonal: float | None,
             value: Callable[[Comparison], float | None]) -> list[list[float | None]]:
        rows: list[list[float | None]] = [[diagonal if i == j else None for j in range(n)]
                                          for i in range(n)]
        for (i, j), c in comparisons.items():
            v = value(c)
            rows[i][j] = rows[j][i] = None if v is None or not math.isfinite(v) else float(v)
        return rows

    return [
        SignalMatrix("fingerprint", "standardised fingerprint distance", False,
                     fill(0.0, lambda c: c.fingerprint.distance)),
        SignalMatrix("cosine", "median cosine of shared 2-D tensors", True,
                     fill(1.0, lambda c: c.weights.matrix_cosine if c.weights else None)),
        SignalMatrix("independence", "-log10 p of the independence test", True,
                     fill(None, lambda c: -c.independence.log10_p
                          if c.independence and c.independence.applicable else None)),
    ]


def compare_many(paths: Sequence[str | Path], options: Options | None = None) -> ComparisonMatrix:
    """Compare every pair of several models or fingerprints; each input is opened once."""
    options = options or Options()
    _check_options(paths, options)
    reference = load_reference(options.reference)
    with ExitStack() as stack:
        opened = []
        for path in paths:  # open everything first: a bad argument fails before any slow work
            opened.append(open_input(path))
            if isinstance(opened[-1], ModelSource):
                stack.enter_context(opened[-1])
        subjects = [make_subject(o, p, options) for o, p in zip(opened, paths)]
        pairs = {(i, j): compare_subjects(subjects[i], subjects[j], reference, options.blocks)
                 for i, j in combinations(range(len(subjects)), 2)}
    return ComparisonMatrix([s.name for s in subjects], _matrices(len(subjects), pairs),
                            list(pairs.values()), [])


def compare_inputs(paths: Sequence[str | Path], options: Options | None = None,
                   plot_dir: str | Path | None = None,
                   force: bool = False) -> Comparison | ComparisonMatrix:
    """What ``tensorguard compare`` shows: a pair's ``Comparison``, or for three or more inputs
    the ``ComparisonMatrix`` with its figures written to ``plot_dir`` (none when ``None``)."""
    if len(paths) == 2:
        return compare_models(*paths, options=options)
    from tensorguard.plots import similarity

    if plot_dir is not None and len(paths) > 2:
        similarity.check_plots_writable(plot_dir, force)  # before any slow work
    result = compare_many(paths, options)
    if plot_dir is None:
        return result
    written = similarity.write_plots(result, plot_dir, force)
    return dataclasses.replace(result, plots=[str(p) for p in written])
