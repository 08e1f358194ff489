"""``tensorguard fingerprint`` on the 2.5 GB bf16 model against the straightforward method.

The baseline (``baseline_fingerprint.py``) loads blocks 0-15 as float32 and runs autograd with full
gradient matrices for every sample; tensorguard streams the ten probed tensors and uses the exact
closed form once per distinct probe. Both run on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.common import TENSORGUARD, Case

GROUP = "fingerprint"
BASELINE = Path(__file__).with_name("baseline_fingerprint.py")


def cases(model: Path, workdir: Path) -> list[Case]:
    baseline = [sys.executable, str(BASELINE), str(model), "-o", str(workdir / "baseline-features")]
    ours = [*TENSORGUARD, "fingerprint", str(model), "-o", str(workdir / "features"), "--device",
            "cpu", "--force", "-q"]
    return [Case(GROUP, "straightforward (float32 load, autograd, scipy)", baseline,
                 baseline=True),
            Case(GROUP, "tensorguard fingerprint --device cpu", ours)]
