"""``tensorguard compare`` on the 2.5 GB bf16 model against a function-preserving permuted copy,
against just reading both models once (every tensor, as stored, through ``ModelSource.read``;
that returns a view of the memory-mapped file, so the case copies each tensor to read its bytes).

The copy renames residual dimensions, attention heads and MLP neurons (``Renaming``, seed 1); it
is written once into the workdir, tensor by tensor, reusing each shard's header (shapes and
dtypes do not change, so neither do the byte offsets).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import struct
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from benchmarks.common import LLAMA_1B, READ_MODELS, TENSORGUARD, Case
from tensorguard.testing.renaming import Renaming

GROUP = "compare"
#: The part of ``compare`` outside the weight signals: fingerprinting both models (its defaults).
_FINGERPRINT_BOTH = """
import sys
from tensorguard.fingerprints import fingerprint
for path in sys.argv[1:]:
    fingerprint(path, samples=15, device="cpu", seed=0)
"""
INDEX = "model.safetensors.index.json"


def _write_shard(source: Path, target: Path, renaming: Renaming) -> None:
    with source.open("rb") as fh:
        prefix = fh.read(8)
        header_bytes = fh.read(struct.unpack("<Q", prefix)[0])
    header = json.loads(header_bytes)
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    with safe_open(str(source), framework="pt") as reader, target.open("wb") as out:
        out.write(prefix + header_bytes)
        for name in names:
            tensor = renaming.apply(name, reader.get_tensor(name)).contiguous()
            out.write(tensor.view(-1).view(torch.uint8).numpy().tobytes())


def permuted_copy(model: Path, workdir: Path, seed: int = 1) -> Path:
    """Write (once) the renamed copy of the benchmark model, streaming one tensor at a time.

    Safe to call from several processes: one writes (into a temporary folder, renamed into
    place when complete) while the others wait on a lock, as ``bench_model`` does."""
    target = workdir / f"{model.name}-permuted"
    with (workdir / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / INDEX).exists():
            print(f"writing {target} (permuted copy, about 2.5 GB) ...", file=sys.stderr)
            partial = workdir / f".{target.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            renaming = Renaming(LLAMA_1B.hidden, LLAMA_1B.heads, LLAMA_1B.kv_heads or LLAMA_1B.heads,
                                LLAMA_1B.intermediate, seed)
            for shard in sorted(model.glob("*.safetensors")):
                _write_shard(shard, partial / shard.name, renaming)
            shutil.copy(model / INDEX, partial / INDEX)
            partial.rename(target)
    return target


def cases(model: Path, workdir: Path) -> list[Case]:
    copy = permuted_copy(model, workdir)
    argv = [*TENSORGUARD, "compare", str(model), str(copy), "--device", "cpu", "--json", "-q"]
    return [Case(GROUP, "read both models once (every tensor, as stored)",
                 [sys.executable, "-c", READ_MODELS, str(model), str(copy)], baseline=True),
            Case(GROUP, "fingerprint both models (the fingerprint part of compare)",
                 [sys.executable, "-c", _FINGERPRINT_BOTH, str(model), str(copy)]),
            Case(GROUP, "tensorguard compare (vs permuted copy, 4 blocks)", argv)]
