"""The compare signals, as a registry: each is one class that measures a pair of subjects.

A signal says what it is called (its key in a ``Comparison``'s evidence and in ``--json``), which
matrix it fills when several models are compared (the value of one pair, and whether higher means
closer), and how to measure a pair. ``@register`` adds it; ``compare`` then measures it for every
pair, puts it in the JSON, the text report, the matrices and the heatmaps. The verdict rule
(``verdict.decide``) reads the evidence by name and stays one explicit, ordered rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tensorguard.errors import TensorguardError
from tensorguard.fingerprints import Fingerprint
from tensorguard.lineage.distance import FingerprintDistance, Reference, fingerprint_distance, not_computed
from tensorguard.lineage.independence import IndependenceTest, independence_test
from tensorguard.lineage.weights import WeightEvidence, weight_evidence
from tensorguard.loading import ModelSource
from tensorguard.signatures import Signature, SignatureSimilarity, compute_signature, similarity


@dataclass(frozen=True)
class Subject:
    """One input of a comparison: a model (with its fingerprint) or a fingerprint file alone.
    ``fingerprint`` ``None``: not computed (``scan`` fingerprints a model only where the answer
    can depend on it); the fingerprint signal then does not apply."""

    name: str
    path: Path | None
    fingerprint: Fingerprint | None
    source: ModelSource | None

    @property
    def kind(self) -> str:
        return "fingerprint" if self.source is None else "model"


@dataclass(frozen=True)
class Context:
    """What every signal may use: the reference population and the options of the run."""

    reference: Reference
    blocks: int
    #: Weight signatures already computed, by source (each model's is computed once per run;
    #: ``scan`` puts the query's here). ``None``: the model has no signature.
    signatures: dict[ModelSource, Signature | None] = field(default_factory=dict)

    def signature(self, source: ModelSource) -> Signature | None:
        if source not in self.signatures:
            try:
                self.signatures[source] = compute_signature(source)
            except TensorguardError:  # no recognised anatomy, or too few usable tokens
                self.signatures[source] = None
        return self.signatures[source]


class Signal:
    """One kind of evidence about a pair. ``measure`` returns it, or ``None`` where it cannot
    apply (e.g. weight signals for fingerprint files)."""

    name: ClassVar[str]  # key in the evidence and the JSON
    title: ClassVar[str]  # what a person calls it
    matrix: ClassVar[str]  # name of its matrix and heatmap across several models
    description: ClassVar[str]
    higher_is_closer: ClassVar[bool]
    diagonal: ClassVar[float | None]  # a model against itself, in the matrix

    def measure(self, a: Subject, b: Subject, context: Context) -> Any | None:
        raise NotImplementedError

    def value(self, evidence: Any) -> float | None:
        """The pair's entry in the signal's matrix."""
        raise NotImplementedError


SIGNALS: dict[str, Signal] = {}


def register(cls: type[Signal]) -> type[Signal]:
    """Class decorator: add a signal (registration order is the report's order)."""
    SIGNALS[cls.name] = cls()
    return cls


@register
class FingerprintSignal(Signal):
    name, matrix, title = "fingerprint", "fingerprint", "fingerprint distance"
    description, higher_is_closer, diagonal = "standardised fingerprint distance", False, 0.0

    def measure(self, a: Subject, b: Subject, context: Context) -> FingerprintDistance:
        if a.fingerprint is None or b.fingerprint is None:
            return not_computed(context.reference)
        return fingerprint_distance(a.fingerprint, b.fingerprint, context.reference)

    def value(self, evidence: FingerprintDistance) -> float | None:
        return evidence.distance


@register
class WeightsSignal(Signal):
    name, matrix, title = "weights", "cosine", "weights"
    description, higher_is_closer, diagonal = "median cosine of shared 2-D tensors", True, 1.0

    def measure(self, a: Subject, b: Subject, context: Context) -> WeightEvidence | None:
        if a.source is None or b.source is None:
            return None
        return weight_evidence(a.source, b.source)

    def value(self, evidence: WeightEvidence) -> float | None:
        return evidence.matrix_cosine


@register
class IndependenceSignal(Signal):
    name, matrix, title = "independence", "independence", "independence test"
    description, higher_is_closer, diagonal = "-log10 p of the independence test", True, None

    def measure(self, a: Subject, b: Subject, context: Context) -> IndependenceTest | None:
        if a.source is None or b.source is None:
            return None
        return independence_test(a.source, b.source, blocks=context.blocks)

    def value(self, evidence: IndependenceTest) -> float | None:
        return -evidence.log10_p if evidence.applicable and evidence.log10_p is not None else None


@register
class SignatureSignal(Signal):
    """The weight signature ``scan`` retrieves with: invariant to renaming, rescaling and rotation
    of the residual stream, and to the vocabulary's row order; calibrated on the lineage corpus
    (every derivative at least 0.582 against its base, every independent pair at most 0.099)."""

    name, matrix, title = "signature", "signature", "weight signature"
    description, higher_is_closer, diagonal = "weight signature similarity", True, 1.0

    def measure(self, a: Subject, b: Subject, context: Context) -> SignatureSimilarity | None:
        if a.source is None or b.source is None:
            return None
        sa, sb = context.signature(a.source), context.signature(b.source)
        return None if sa is None or sb is None else similarity(sa, sb)

    def value(self, evidence: SignatureSimilarity) -> float | None:
        return evidence.score
