"""Stored numbers rounded to a fixed number of significant digits.

Results written as JSON are rounded so that last-bit differences between BLAS builds, devices or
summation orders cannot reach the written bytes.
"""

from __future__ import annotations


def round_significant(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits (and -0.0 to 0.0)."""
    return float(f"{value:.{digits}g}") + 0.0
