"""``tensorguard sensitivity`` on the 2.5 GB file (all 113 matrices, 20 samples, all 8 noise kinds)
against just reading every tensor of the model once through ``ModelSource.read``.

The other rows split the cost: ``--seeds repeat`` (the paper's re-seeding: one probe per kind),
the default without ``adversarial`` (whose 20 FGSM probes each stream the 128256 x 2048 embedding),
and the paper's ``gradient-norm`` metric, which reads no weights beyond that FGSM matrix.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.common import TENSORGUARD, Case
from tensorguard.probes import ALL_KINDS

_READ_ALL = """
import sys, torch
from tensorguard.loading import open_model
with open_model(sys.argv[1]) as source:
    for name in source.tensors:
        source.read(name{cast}).clone()  # a copy touches every byte; the read alone maps the file
"""
GROUP = "sensitivity"
_NOT_ADVERSARIAL = ",".join(k for k in ALL_KINDS if k != "adversarial")


def cases(model: Path, workdir: Path) -> list[Case]:
    out = str(workdir / "sensitivity-out")
    base = [*TENSORGUARD, "sensitivity", str(model), "--metric", "response", "--samples", "20", "-o",
            out, "--force", "-q"]
    return [
        Case(GROUP, "read every tensor once (as stored)",
             [sys.executable, "-c", _READ_ALL.format(cast=""), str(model)], baseline=True),
        Case(GROUP, "read every tensor once (as float32)",
             [sys.executable, "-c", _READ_ALL.format(cast=", torch.float32"), str(model)]),
        Case(GROUP, "sensitivity, response, 20 distinct seeds, all kinds", [*base, "--noise", "all"]),
        Case(GROUP, "sensitivity, response, same without adversarial",
             [*base, "--noise", _NOT_ADVERSARIAL]),
        Case(GROUP, "sensitivity, response, --seeds repeat (paper), all kinds",
             [*base, "--noise", "all", "--seeds", "repeat"]),
        Case(GROUP, "sensitivity, gradient-norm, --seeds repeat (paper), all kinds",
             [*base, "--noise", "all", "--seeds", "repeat", "--metric", "gradient-norm"]),
    ]
