"""The forward sensitivity metric: each layer perturbed in the model's own forward pass
(``transformers``, the optional extra ``tensorguard[forward]``).

``build`` makes the model from the file, ``sequences`` the token sequences it runs, ``perturb``
the perturbations and their measure. ``kl_by_layer`` ties them together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from tensorguard.architectures import Slot, lookup
from tensorguard.forward.build import Built, build_model
from tensorguard.forward.perturb import Probe, Target
from tensorguard.forward.sequences import LENGTH, generate
from tensorguard.loading import ModelSource

#: The matrices scored by default: those writing into the residual stream (each block's attention
#: output and MLP output) and the token embedding; their outputs are what a block adds.
RESIDUAL_WRITERS = frozenset({Slot.EMBED, Slot.O, Slot.DOWN})
_BLOCK = re.compile(r"^(.*)\.(\d+)\.")


def _targets(model: torch.nn.Module, names: dict[str, str]) -> tuple[list[Target], list[torch.nn.Module]]:
    """The scored matrices with their modules, and the model's list of blocks."""
    located = {n: lookup(n) for n in names}
    chosen = [n for n, loc in located.items() if loc is not None and loc.slot in RESIDUAL_WRITERS]
    if not chosen:  # a naming the registry does not know: every matrix with a module
        chosen = list(names)
    containers: dict[str, list[torch.nn.Module]] = {}
    targets = []
    for name in sorted(chosen):
        key = names[name]
        if not key.endswith(".weight"):
            continue
        module = model.get_submodule(key.removesuffix(".weight"))
        match = _BLOCK.match(key)
        block = None
        if match is not None:
            holder = model.get_submodule(match.group(1))
            if isinstance(holder, torch.nn.ModuleList):
                containers.setdefault(match.group(1), list(holder))
                block = int(match.group(2))
        targets.append(Target(name, module, block))
    if len(containers) != 1:  # no single list of blocks: every target runs the whole model
        return [Target(t.name, t.module, None) for t in targets], []
    return targets, next(iter(containers.values()))


def kl_by_layer(source: ModelSource, kinds: Sequence[str], *, sequences: int) -> dict[str, list[float]]:
    """For each scored matrix of ``source``, the mean next-token KL divergence per kind."""
    return measure(build_model(source), kinds, sequences=sequences, desc=source.name)


def measure(built: Built, kinds: Sequence[str], *, sequences: int, desc: str = "") -> dict[str, list[float]]:
    """``kl_by_layer`` for a model already built (its weights may have been changed since)."""
    tokens = generate(built.model, count=sequences, length=LENGTH, seed=0)
    targets, layers = _targets(built.model, built.names)
    return Probe(built.model, tokens, layers, targets, kinds).run(desc)
