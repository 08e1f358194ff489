"""The verdict rule: one label and a one-line reason from the signals of a pair.

In order, the first rule that applies:

1. ``same weights``: the models have the same tensor names and shapes and every tensor is equal,
   byte for byte or after a dtype cast (the cast is named);
2. ``derived``: the independence test rejects independence (``p < ALPHA``), or the median
   cosine of the shared 2-D tensors is at least ``DERIVED_COSINE``;
3. ``independent``: the test ran and did not reject (``p >= ALPHA``) and the weights share
   tensor names whose median matrix cosine is below ``INDEPENDENT_COSINE`` in absolute value;
4. ``inconclusive``: anything else (fingerprints only, no shared vocabulary rows, different
   architectures, or evidence that disagrees); the reason says what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tensorguard.enums import TextEnum
from tensorguard.lineage.distance import FingerprintDistance
from tensorguard.lineage.independence import IndependenceTest
from tensorguard.lineage.weights import WeightEvidence

ALPHA = 1e-3
DERIVED_COSINE = 0.5
INDEPENDENT_COSINE = 0.1


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


def decide(distance: FingerprintDistance, weights: WeightEvidence | None,
           test: IndependenceTest | None) -> Verdict:
    """Apply the rule in the module docstring."""
    p = test.p_value if test is not None and test.applicable else None
    rejects = test is not None and test.applicable and (test.log10_p or 0.0) < math.log10(ALPHA)
    cosine = weights.matrix_cosine if weights is not None and weights.applicable else None
    if weights is not None and weights.all_identical:
        how = f"after a dtype cast ({', '.join(weights.casts)})" if weights.casts else "byte for byte"
        return Verdict(VerdictLabel.SAME_WEIGHTS, p, f"all {weights.shared_tensors} tensors identical {how}")
    if rejects and test is not None:
        return Verdict(VerdictLabel.DERIVED, p, _test_summary(test))
    if cosine is not None and cosine >= DERIVED_COSINE:
        return Verdict(VerdictLabel.DERIVED, p, f"median cosine of shared matrices {cosine:.3f}")
    if test is not None and test.applicable and cosine is not None and abs(cosine) < INDEPENDENT_COSINE:
        return Verdict(VerdictLabel.INDEPENDENT, p,
                       f"{_test_summary(test)}; median cosine of shared matrices {cosine:.3f}")
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
    return Verdict(VerdictLabel.INCONCLUSIVE, p, "; ".join([*missing, _distance_summary(distance)]))
