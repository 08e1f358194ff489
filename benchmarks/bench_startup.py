"""Start-up: what a command costs before any work, and what the fingerprint path imports.

``import tensorguard`` loads nothing heavy (the API is lazy); ``tensorguard --help`` loads click
only; ``fingerprint`` of a 4-tensor model is almost all torch's import, and never loads SciPy,
scikit-learn or matplotlib (``tests/test_api.py`` checks that).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from benchmarks.common import TENSORGUARD, Case
from tensorguard.synthetic import ModelSpec, make_weights, save_model

GROUP = "startup"


def cases(model: Path, workdir: Path) -> list[Case]:
    tiny = workdir / "tiny-startup.safetensors"
    if not tiny.exists():
        save_model(make_weights(ModelSpec(layers=1, hidden=32, intermediate=64, vocab=64), 0), tiny,
                   dtype=torch.bfloat16)
    return [
        Case(GROUP, "python -c 'import tensorguard'", [sys.executable, "-c", "import tensorguard"],
             baseline=True),
        Case(GROUP, "tensorguard --help", [*TENSORGUARD, "--help"]),
        Case(GROUP, "tensorguard fingerprint (tiny model, --json)",
             [*TENSORGUARD, "fingerprint", str(tiny), "--json", "-q", "--device", "cpu"]),
    ]
