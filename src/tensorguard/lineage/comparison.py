"""``compare``: every registered signal for a pair of models, the verdict, and the matrices for
several models. Inputs are models (paths or open sources) or fingerprints (files or objects)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import combinations
from os import PathLike
from pathlib import Path
from typing import Any, Union

import torch

from tensorguard.errors import TensorguardError, UsageError
from tensorguard.fingerprints import Fingerprint, fingerprint_source, load_fingerprint
from tensorguard.inputs import read_json
from tensorguard.lineage.distance import FingerprintDistance, load_reference
from tensorguard.lineage.independence import IndependenceTest
from tensorguard.lineage.signals import SIGNALS, Context, Subject
from tensorguard.lineage.verdict import Verdict, decide, test_decides
from tensorguard.lineage.weights import WeightEvidence, may_be_identical
from tensorguard.loading import ModelInput, ModelSource, is_reference, model_path, open_model
from tensorguard.loading.layouts import ADAPTER_CONFIG
from tensorguard.validation import whole_option

#: A compare input: a model path, an open source, a fingerprint file (``.json``) or a fingerprint.
CompareInput = Union[str, "PathLike[str]", ModelSource, Fingerprint]


@dataclass(frozen=True)
class Comparison:
    """Everything ``compare`` found about one pair; ``evidence`` maps each registered signal's
    name to what it measured (``None`` where it could not apply)."""

    model_a: str
    model_b: str
    inputs: tuple[str, str]  # model | fingerprint
    verdict: Verdict
    evidence: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # how inputs were read (e.g. which base a LoRA adapter was merged onto)

    @property
    def fingerprint(self) -> FingerprintDistance:
        return self.evidence["fingerprint"]  # type: ignore[no-any-return]

    @property
    def weights(self) -> WeightEvidence | None:
        return self.evidence.get("weights")

    @property
    def independence(self) -> IndependenceTest | None:
        return self.evidence.get("independence")

    def to_dict(self) -> dict[str, Any]:
        """The pair, the verdict, then each signal under its name (the ``--json`` layout)."""
        return {"model_a": self.model_a, "model_b": self.model_b, "inputs": list(self.inputs),
                "notes": list(self.notes), "verdict": self.verdict, **self.evidence}


@dataclass(frozen=True)
class SignalMatrix:
    """One signal for every pair; ``None`` where it does not apply."""

    signal: str
    description: str
    higher_is_closer: bool
    values: list[list[float | None]]


@dataclass(frozen=True)
class ComparisonMatrix:
    """``compare`` over several inputs: per-signal matrices and each pair's comparison
    (``comparisons`` in ``itertools.combinations`` order)."""

    models: list[str]
    signals: list[SignalMatrix]
    comparisons: list[Comparison]
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_fingerprint_file(path: Path) -> bool:
    """A ``.json`` file that is not a safetensors index is read as a fingerprint."""
    return path.is_file() and path.suffix == ".json" and not path.name.endswith(".index.json")


def _is_adapter(item: CompareInput) -> bool:
    return (not isinstance(item, (Fingerprint, ModelSource)) and model_path(item).is_dir()
            and (model_path(item) / ADAPTER_CONFIG).is_file())


def _open(item: CompareInput, stack: ExitStack) -> Fingerprint | ModelSource:
    """A fingerprint, or a model source (opened here when given by path, closed with ``stack``)."""
    if isinstance(item, (Fingerprint, ModelSource)):
        return item
    if not is_reference(item) and is_fingerprint_file(Path(item)):
        return load_fingerprint(Path(item))
    return stack.enter_context(open_model(item))


def _named_base(adapter: Path) -> str | None:
    """The last part of the adapter config's ``base_model_name_or_path`` (``org/Model`` -> ``Model``)."""
    config = read_json(adapter / ADAPTER_CONFIG, what="an adapter config")
    named = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return str(named).rstrip("/").rsplit("/", 1)[-1].lower() if isinstance(named, str) and named else None


def _open_adapter(adapter: str, others: Sequence[ModelSource], base: ModelInput | None,
                  stack: ExitStack) -> tuple[ModelSource, str]:
    """A LoRA adapter merged onto ``base``, or onto the other input its config names, or onto the
    first other input it fits; with a note saying which base was used."""
    path = model_path(adapter)
    if base is not None:
        source = open_model(adapter, base=base)
        return stack.enter_context(source), f"{path.name}: a LoRA adapter, merged onto {base}"
    named = _named_base(path)
    ordered = sorted(others, key=lambda o: o.name.lower() != named)  # the named base first
    for other in ordered:
        try:
            source = stack.enter_context(open_model(adapter, base=other))
        except TensorguardError:
            continue  # does not fit this model
        why = "its config names it" if other.name.lower() == named else "its shapes fit"
        return source, f"{path.name}: a LoRA adapter, merged onto the other input {other.name} ({why})"
    raise UsageError(f"{adapter}: is a LoRA adapter that fits no other input; pass its base model "
                     "with {base}", "base")


def _open_all(inputs: Sequence[CompareInput], base: ModelInput | None,
              stack: ExitStack) -> tuple[list[Fingerprint | ModelSource], list[str]]:
    """Every input opened (adapters last, onto a base), and notes on how adapters were read."""
    opened: dict[int, Fingerprint | ModelSource] = {
        i: _open(item, stack) for i, item in enumerate(inputs) if not _is_adapter(item)}
    models = [o for o in opened.values() if isinstance(o, ModelSource)]
    notes = []
    for i, item in enumerate(inputs):
        if i not in opened:
            opened[i], note = _open_adapter(str(item), models, base, stack)
            notes.append(note)
    ordered = [opened[i] for i in range(len(inputs))]
    return ordered, notes + [n for o in ordered if isinstance(o, ModelSource) and (n := _quantized(o))]


def _quantized(source: ModelSource) -> str | None:
    """A note for a model stored quantized: its weights differ from any float model by at least the
    quantization error, so it can be ``derived`` from its source but never ``same weights``."""
    schemes = sorted({i.quant.scheme for i in source.matrices() if i.quant is not None})
    if not schemes:
        return None
    return f"{source.name}: stored quantized ({source.format.value}: {', '.join(schemes)})"


def _subject(opened: Fingerprint | ModelSource, item: CompareInput, *, samples: int, seed: int,
             device: str | torch.device) -> Subject:
    """A subject from an opened input; a model is fingerprinted here (the slow part)."""
    path = None if isinstance(item, (Fingerprint, ModelSource)) else Path(item)
    if isinstance(opened, Fingerprint):
        return Subject(opened.model_name, path or opened.path, opened, None)
    fp = fingerprint_source(opened, samples=samples, seed=seed, device=device)
    return Subject(opened.name, path or opened.root, fp, opened)


def compare_subjects(a: Subject, b: Subject, context: Context,
                     measured: Mapping[str, Any] | None = None) -> Comparison:
    """Every registered signal for an opened pair, and the verdict. ``measured``: signals already
    measured for this pair (by name), kept rather than measured again (``scan`` measures the
    fingerprint last, and only where its answer needs it)."""
    done = measured or {}
    evidence = {name: done[name] if name in done else signal.measure(a, b, context)
                for name, signal in SIGNALS.items()}
    distance = evidence["fingerprint"]
    assert isinstance(distance, FingerprintDistance)  # the fingerprint signal always applies
    test = evidence["independence"]
    verdict = decide(distance, evidence["weights"], test, evidence["signature"])
    notes = (test.alignment.note,) if test is not None and test.alignment and test.alignment.note else ()
    return Comparison(a.name, b.name, (a.kind, b.kind), verdict, evidence, notes)


def confirm_subjects(a: Subject, b: Subject, context: Context,
                     measured: Mapping[str, Any] | None = None) -> Comparison:
    """``compare_subjects``'s verdict, reading less of the models: when they cannot hold the same
    weights (``may_be_identical``: other names or shapes, or a first block that differs) and the
    independence test alone decides (``test_decides``), the verdict is ``derived`` whatever the
    weight cosines, which are then not measured (``weights`` is ``None`` in the evidence). Otherwise
    every signal is measured, as ``compare`` does. ``scan`` confirms with it."""
    done = dict(measured or {})
    if "weights" not in done and a.source is not None and b.source is not None \
            and not may_be_identical(a.source, b.source):
        first = compare_subjects(a, b, context, {**done, "weights": None})
        if test_decides(first.independence):
            return first
        done = {k: v for k, v in first.evidence.items() if k != "weights"}
    return compare_subjects(a, b, context, done)


def _matrices(n: int, pairs: dict[tuple[int, int], Comparison]) -> list[SignalMatrix]:
    out = []
    for signal in SIGNALS.values():
        rows: list[list[float | None]] = [[signal.diagonal if i == j else None for j in range(n)]
                                          for i in range(n)]
        for (i, j), c in pairs.items():
            evidence = c.evidence[signal.name]
            v = None if evidence is None else signal.value(evidence)
            rows[i][j] = rows[j][i] = None if v is None or not math.isfinite(v) else float(v)
        out.append(SignalMatrix(signal.matrix, signal.description, signal.higher_is_closer, rows))
    return out


@contextmanager
def _subjects(inputs: Sequence[CompareInput], *, base: ModelInput | None, samples: int, seed: int,
              device: str | torch.device) -> Iterator[tuple[list[Subject], list[str]]]:
    with ExitStack() as stack:
        opened, notes = _open_all(inputs, base, stack)  # every bad argument fails before slow work
        yield [_subject(o, item, samples=samples, seed=seed, device=device)
               for o, item in zip(opened, inputs, strict=True)], notes


def compare_all(inputs: Sequence[CompareInput], *, reference: str | Path | None = None,
                blocks: int = 4, samples: int = 15, seed: int = 0, device: str | torch.device = "auto",
                base: ModelInput | None = None) -> ComparisonMatrix:
    """Compare every pair of several models or fingerprints; each input is opened once.
    Options as for ``compare``."""
    if len(inputs) < 2:
        raise TensorguardError("compare needs at least two models or fingerprints")
    whole_option("blocks", blocks)
    context = Context(load_reference(reference), blocks)
    with _subjects(inputs, base=base, samples=samples, seed=seed, device=device) as (subjects, notes):
        pairs = {(i, j): compare_subjects(subjects[i], subjects[j], context)
                 for i, j in combinations(range(len(subjects)), 2)}
    comparisons = [dataclasses.replace(c, notes=(*notes, *c.notes)) for c in pairs.values()]
    return ComparisonMatrix([s.name for s in subjects], _matrices(len(subjects), pairs), comparisons,
                            notes=notes)


def compare(a: CompareInput, b: CompareInput, *, reference: str | Path | None = None,
            blocks: int = 4, samples: int = 15, seed: int = 0, device: str | torch.device = "auto",
            base: ModelInput | None = None) -> Comparison:
    """Is ``b`` derived from ``a``? Fingerprint distance, weight evidence and the
    permutation-robust independence test, and a verdict (``same weights``, ``derived``,
    ``independent`` or ``inconclusive``).

    Args:
        a, b: models (paths or open ``ModelSource``s) or fingerprints (``.json`` files or
            ``Fingerprint`` objects: fingerprint distance only).
        reference: a directory of reference fingerprints (+ ``labels.csv``) that standardises
            distances (default: the bundled ``features/``).
        blocks: evenly spaced MLP blocks the independence test probes.
        samples, seed, device: how models are fingerprinted.
        base: the base model of an input that is a LoRA adapter. Without it, an adapter is merged
            onto the other input when its config names that model or its shapes fit (a note says
            which).

    Example::

        result = tensorguard.compare("./Llama-3.2-1B", "./suspect")
        print(result.verdict.label, result.verdict.p_value)
    """
    return compare_all([a, b], reference=reference, blocks=blocks, samples=samples, seed=seed,
                       device=device, base=base).comparisons[0]
