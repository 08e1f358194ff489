"""``tensorguard fingerprint`` on the 1B-shaped model as GGUF (Q8_0, Q4_K) against its bf16 safetensors.

The GGUF files are written once from the benchmark model (``save_gguf``: llama.cpp's conversions,
1-D tensors F32, every matrix in the type; Q4_K with tensorguard's simple quantizer, as
``gguf.quants`` cannot quantize Q4_K). Reading a GGUF reads and dequantizes only the row blocks a
command asks for, so peak memory stays near the largest block read, as with safetensors.
"""

from __future__ import annotations

import fcntl
import sys
from pathlib import Path

from benchmarks.common import LLAMA_1B, TENSORGUARD, Case
from tensorguard.loading import open_model
from tensorguard.testing.gguf_write import Q, save_gguf

GROUP = "gguf"
TYPES = (Q.Q8_0, Q.Q4_K)


def gguf_model(model: Path, workdir: Path, qtype: Q) -> Path:
    """Write (once, under a lock) the benchmark model as a GGUF file of ``qtype``."""
    path = workdir / f"{model.name}.{qtype.name}.gguf"
    with (workdir / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            print(f"writing {path} ...", file=sys.stderr)
            partial = path.with_suffix(".partial")
            with open_model(model) as source:
                save_gguf(source, partial, arch="llama", heads=LLAMA_1B.heads,
                          kv_heads=LLAMA_1B.kv_heads, qtype=qtype)
            partial.rename(path)
    return path


def cases(model: Path, workdir: Path) -> list[Case]:
    def fingerprint(path: Path) -> list[str]:
        return [*TENSORGUARD, "fingerprint", str(path), "-o", str(workdir / "gguf-features"),
                "--device", "cpu", "--force", "-q"]

    out = [Case(GROUP, "fingerprint, bf16 safetensors (2 shards)", fingerprint(model), baseline=True)]
    for qtype in TYPES:
        path = gguf_model(model, workdir, qtype)
        out.append(Case(GROUP, f"fingerprint, GGUF {qtype.name} ({path.stat().st_size / 1e9:.2f} GB)",
                        fingerprint(path)))
    path = gguf_model(model, workdir, TYPES[-1])
    out.append(Case("inspect", f"tensorguard inspect --json, GGUF {TYPES[-1].name}",
                    [*TENSORGUARD, "inspect", str(path), "--json"]))
    return out
