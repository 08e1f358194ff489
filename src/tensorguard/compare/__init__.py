"""Pairwise lineage: is model B derived from model A? Fingerprint, weights, independence test."""

from tensorguard.compare.pairwise import (
    Comparison,
    ComparisonMatrix,
    Options,
    SignalMatrix,
    compare_inputs,
    compare_many,
    compare_models,
)
from tensorguard.compare.render import render_text

__all__ = ["Comparison", "ComparisonMatrix", "Options", "SignalMatrix", "compare_inputs", "compare_many",
           "compare_models", "render_text"]
