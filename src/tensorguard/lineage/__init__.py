"""Pairwise lineage: is model B derived from model A? Registered signals (fingerprint distance,
weight evidence, the permutation-robust independence test) and one documented verdict rule."""

from tensorguard.lineage.comparison import (
    CompareInput,
    Comparison,
    ComparisonMatrix,
    SignalMatrix,
    compare,
    compare_all,
    compare_subjects,
    confirm_subjects,
    is_fingerprint_file,
)
from tensorguard.lineage.signals import SIGNALS, Context, Signal, Subject, register
from tensorguard.lineage.verdict import Verdict, VerdictLabel, decide

__all__ = ["SIGNALS", "CompareInput", "Comparison", "ComparisonMatrix", "Context", "Signal",
           "SignalMatrix", "Subject", "Verdict", "VerdictLabel", "compare", "compare_all",
           "compare_subjects", "confirm_subjects", "decide", "is_fingerprint_file", "register"]
