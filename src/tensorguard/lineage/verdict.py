"""The verdict rule: one label and a one-line reason from the signals of a pair.

In order, the first rule that applies:

1. ``same weights``: the models have the same tensor names and shapes and every tensor is equal,
   byte for byte or after a dtype cast (the cast is named);
2. ``derived``: the independence test rejects independence (``p < ALPHA``) with a residual
   alignment that fits (Procrustes fit at least ``MIN_FIT``), or the median
   cosine of the shared 2-D tensors is at least ``DERIVED_COSINE``, or the weight signatures
   are at least ``SIGNATURE_DERIVED`` alike, in the whole and in the blocks alone (an embedding
   shared by otherwise unrelated models is not enough): rotation-invariant evidence that no
   blind test vetoes;
3. ``independent``, only on positive evidence: the test ran and did not reject (``p >= ALPHA``),
   its alignment stood on embedding rows paired by token string, at least
   ``alignment.ROWS_PER_DIMENSION`` of them per residual dimension, the test had the power to see
   a derivation (``detectable_rho``: the Spearman rho that, in every probed block, would have
   rejected, is at most ``POWER_RHO``), the weights share tensor names whose median matrix
   cosine is below ``INDEPENDENT_COSINE`` in absolute value, and the weight signatures, where
   both models have one, are less than ``SIGNATURE_INDEPENDENT`` alike;
4. ``inconclusive``: anything else (fingerprints only, no shared vocabulary rows, different
   architectures, rows paired by index for want of a tokenizer, too few shared tokens, too
   little power, or evidence that disagrees); the reason says what is missing.

The signature thresholds come from the lineage corpus (``catalogue.scanning``'s docstring): every
derivative scored at least 0.582 against its base, every independent pair at most 0.099;
``SIGNATURE_DERIVED`` sits below the first, ``SIGNATURE_INDEPENDENT`` at twice the second.
``MIN_FIT`` 0.6: on the lineage corpus every derivative's embedding rows fit its base's at 0.868 or
more, every independent pair's at 0.350 or less. Two models trained on similar text with one
tokenizer learn embeddings alike up to a rotation; the map Procrustes fits to them then makes their
MLP neurons correlate, and the test rejects (p = 9e-6 for one independent pair of the corpus).
A rejection through a map that fits that poorly is no evidence of derivation (``inconclusive``).
``POWER_RHO`` 0.5: the derivatives of the lineage corpus that the test confirms keep rho above
0.5 in every probed block (``docs/alignment.md``), so a test that would miss rho 0.5 could miss
one of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tensorguard.enums import TextEnum
from tensorguard.lineage.alignment import BY_STRING
from tensorguard.lineage.distance import FingerprintDistance
from tensorguard.lineage.independence import IndependenceTest, block_log_p, fisher_log_p
from tensorguard.lineage.weights import WeightEvidence
from tensorguard.signatures import SignatureSimilarity

ALPHA = 1e-3
DERIVED_COSINE = 0.5
INDEPENDENT_COSINE = 0.1
MIN_FIT = 0.6
POWER_RHO = 0.5
SIGNATURE_DERIVED = 0.5
SIGNATURE_INDEPENDENT = 0.2


class VerdictLabel(TextEnum):
    SAME_WEIGHTS = "same weights"
    DERIVED = "derived"
    INDEPENDENT = "independent"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    label: VerdictLabel
    p_value: float | None
    reason: str


def format_p(log10_p: float) -> str:
    """``p = 3.1e-12``, or ``p < 1e-300`` where the value underflows a double."""
    return "p < 1e-300" if log10_p < -300 else f"p = {10.0 ** log10_p:.2g}"


def _test_summary(test: IndependenceTest) -> str:
    rhos = [b.rho for b in test.blocks if math.isfinite(b.rho)]
    spread = f", Spearman rho {min(rhos):.2f} to {max(rhos):.2f}" if rhos else ""
    return (f"independence test {format_p(test.log10_p or 0.0)} over {len(test.blocks)} "
            f"block(s){spread}")


def _distance_summary(distance: FingerprintDistance) -> str:
    if distance.distance is None:
        return f"fingerprint distance not applicable ({distance.reason})"
    text = f"fingerprint distance {distance.distance:.3g}"
    if distance.different_family_percentile is not None:
        text += (f", shorter than {100 - distance.different_family_percentile:.0f}% of "
                 "different-family reference pairs")
    return text


def detectable_rho(test: IndependenceTest) -> float | None:
    """The smallest Spearman rho that, reached in every probed block, would have made the test
    reject at ``ALPHA`` (with each block's neurons and Bonferroni factor); ``None`` if even rho 1
    would not."""
    def log_p(rho: float) -> float:
        return fisher_log_p([min(0.0, block_log_p(rho, b.matched) + math.log(b.candidates))
                             for b in test.blocks])

    target = math.log(ALPHA)
    if not test.blocks or log_p(1.0) >= target:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if log_p(mid) < target else (mid, hi)
    return hi


def _misfit(test: IndependenceTest | None) -> str | None:
    """Why a rejecting test is no evidence of derivation: an alignment that fits poorly."""
    al = test.alignment if test is not None else None
    if al is None or al.fit >= MIN_FIT:
        return None
    return (f"the test rejected through a residual alignment that fits poorly (fit {al.fit:.3f} < "
            f"{MIN_FIT}): no rotation matches the embeddings, and such a fitted map makes "
            "independent models' neurons correlate")


def _why_not_independent(test: IndependenceTest) -> str | None:
    """What keeps a test that did not reject from counting as evidence of independence."""
    al = test.alignment
    if al is not None and al.rows_by != BY_STRING:
        return f"not evidence of independence: {al.note}"
    if al is not None and not al.determined:
        return (f"not evidence of independence: only {al.rows} shared token strings for a residual "
                f"width of {max(al.hidden_a, al.hidden_b)}")
    rho = detectable_rho(test)
    if rho is None or rho > POWER_RHO:
        seen = "no rho" if rho is None else f"only rho above {rho:.2f}"
        return f"not evidence of independence: the test could see {seen} (needs {POWER_RHO})"
    return None


def test_decides(test: IndependenceTest | None) -> bool:
    """Whether the test alone makes the verdict ``derived`` (rule 2) for models whose weights are
    not all identical: it rejects, through an alignment that fits."""
    rejects = test is not None and test.applicable and (test.log10_p or 0.0) < math.log10(ALPHA)
    return rejects and _misfit(test) is None


def decide(distance: FingerprintDistance, weights: WeightEvidence | None,
           test: IndependenceTest | None, signature: SignatureSimilarity | None = None) -> Verdict:
    """Apply the rule in the module docstring."""
    p = test.p_value if test is not None and test.applicable else None
    rejects = test is not None and test.applicable and (test.log10_p or 0.0) < math.log10(ALPHA)
    cosine = weights.matrix_cosine if weights is not None and weights.applicable else None
    if weights is not None and weights.all_identical:
        how = f"after a dtype cast ({', '.join(weights.casts)})" if weights.casts else "byte for byte"
        return Verdict(VerdictLabel.SAME_WEIGHTS, p, f"all {weights.shared_tensors} tensors identical {how}")
    misfit = _misfit(test) if rejects else None
    if test is not None and test_decides(test):
        return Verdict(VerdictLabel.DERIVED, p, _test_summary(test))
    if cosine is not None and cosine >= DERIVED_COSINE:
        return Verdict(VerdictLabel.DERIVED, p, f"median cosine of shared matrices {cosine:.3f}")
    blocks = _block_similarity(signature)
    if signature is not None and blocks is not None and min(signature.score, blocks) >= SIGNATURE_DERIVED:
        also = f"; {_test_summary(test)}" if test is not None and test.applicable else ""
        return Verdict(VerdictLabel.DERIVED, p, f"weight signature similarity {signature.score:.3f} "
                       f"(blocks {blocks:.3f}){also}")
    tested = test if test is not None and test.applicable else None
    doubts = [d for d in (misfit, _why_not_independent(tested) if tested is not None else None,
                          _signature_doubt(signature)) if d is not None]
    if tested is not None and not doubts and cosine is not None and abs(cosine) < INDEPENDENT_COSINE:
        signed = f"; weight signature similarity {signature.score:.3f}" if signature is not None else ""
        return Verdict(VerdictLabel.INDEPENDENT, p,
                       f"{_test_summary(tested)}; median cosine of shared matrices {cosine:.3f}{signed}")
    missing = []
    if test is None:
        missing.append("fingerprints only")
    else:
        missing.append(_test_summary(test) if test.applicable
                       else f"independence test not applicable ({test.reason})")
        if weights is not None and not weights.applicable:
            missing.append(f"weights: {weights.reason}")
        elif cosine is not None:
            missing.append(f"median cosine of shared matrices {cosine:.3f}")
    return Verdict(VerdictLabel.INCONCLUSIVE, p,
                   "; ".join([*missing, *doubts, _distance_summary(distance)]))


def _block_similarity(signature: SignatureSimilarity | None) -> float | None:
    """The blocks' part of a signature similarity (the mean over the kinds both models have)."""
    if signature is None or not signature.kinds:
        return None
    return sum(signature.kinds.values()) / len(signature.kinds)


def _signature_doubt(signature: SignatureSimilarity | None) -> str | None:
    if signature is None or signature.score < SIGNATURE_INDEPENDENT:
        return None
    return f"weight signature similarity {signature.score:.3f} is not that of independent models"
