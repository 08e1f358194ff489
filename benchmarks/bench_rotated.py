"""``tensorguard compare`` on the 2.5 GB bf16 model against a rotated copy, against reading both
models once and against ``compare`` on the plain pair (the permuted copy of ``bench_compare``).

The rotated copy is what QuaRot publishes before quantizing: every norm weight folded into the
matrices after it, the residual stream rotated by a randomized Hadamard matrix
(``testing.disguises.hadamard_rotation``), the tied head untied. It is written once into the
workdir, reading the model one tensor at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from benchmarks.bench_compare import permuted_copy
from benchmarks.common import LLAMA_1B, READ_MODELS, TENSORGUARD, Case, build_once
from tensorguard.loading import ModelSource, open_model
from tensorguard.synthetic import save_model
from tensorguard.testing.disguises import hadamard_rotation, map_residual

GROUP = "rotated"


class _Tensors(Mapping[str, torch.Tensor]):
    """A model's tensors as a mapping that reads each one (float32) when asked."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.source.tensors:
            raise KeyError(name)
        return self.source.read(name, dtype=torch.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self.source.tensors)

    def __len__(self) -> int:
        return len(self.source.tensors)


def rotated_copy(model: Path, workdir: Path, seed: int = 1) -> Path:
    """Write (once) the rotated copy of the benchmark model (bf16, 2 shards)."""

    def write(folder: Path) -> None:
        print(f"writing {folder.name} (rotated copy, about 3 GB) ...", file=sys.stderr)
        right, left = hadamard_rotation(LLAMA_1B.hidden, seed=seed)
        with open_model(model) as source:
            out = map_residual(_Tensors(source), lambda x: right(x).bfloat16(),
                               lambda x: left(x).bfloat16(), LLAMA_1B.hidden)
        save_model(out, folder, dtype=torch.bfloat16, shards=2)

    return build_once(workdir / f"{model.name}-rotated", write)


def cases(model: Path, workdir: Path) -> list[Case]:
    rotated, permuted = rotated_copy(model, workdir), permuted_copy(model, workdir)

    def compare(other: Path) -> list[str]:
        return [*TENSORGUARD, "compare", str(model), str(other), "--device", "cpu", "--json", "-q"]

    return [Case(GROUP, "read both models once (model, rotated copy)",
                 [sys.executable, "-c", READ_MODELS, str(model), str(rotated)], baseline=True),
            Case(GROUP, "tensorguard compare (vs permuted copy, 4 blocks)", compare(permuted)),
            Case(GROUP, "tensorguard compare (vs rotated copy, 4 blocks)", compare(rotated))]
