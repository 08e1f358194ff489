"""Seeded probe inputs, one registered ``ProbeKind`` per kind: the paper's five noise kinds and its
three attention-targeted kinds.

Every probe is drawn on the CPU in float32 from a ``torch.Generator`` seeded with ``seed`` (0 by
default, as the reference re-seeds before every probe), so a probe depends only on its kind, its
dimension and, for ``adversarial``, the matrix it attacks: never on the device or the model
being probed. ``Probe.delta`` is the perturbation itself (the probe minus its clean base).

Frequency masks are computed in float64 and only the perturbation is rounded to float32, so a
probe does not change with the FFT build. A kind is a small class registered with
``@register``: adding one is one class, and every command that takes kinds sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from tensorguard.enums import TextEnum
from tensorguard.errors import OptionError
from tensorguard.probes.fgsm import MatrixRows, fgsm_step

NOISE_SCALE = 0.1


class Group(TextEnum):
    NOISE = "noise"  # the paper's five fingerprint kinds
    ATTENTION = "attention"  # the paper's attention-targeted sensitivity kinds


@dataclass(frozen=True)
class Probe:
    """One probe input ``x`` (shape ``(dim,)``), its clean ``base`` and ``delta = x - base``."""

    kind: str
    x: torch.Tensor
    base: torch.Tensor
    delta: torch.Tensor


class ProbeKind:
    """A kind of probe: ``draw`` makes (base, delta) from a freshly seeded generator."""

    name: ClassVar[str]
    group: ClassVar[Group]
    needs_matrix: ClassVar[bool] = False

    def draw(self, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def make(self, dim: int, seeds: Sequence[int],
             matrix: torch.Tensor | MatrixRows | None = None) -> list[Probe]:
        """One probe per seed (each from a generator seeded with it)."""
        probes = []
        for seed in seeds:
            base, delta = self.draw(dim, torch.Generator().manual_seed(seed))
            probes.append(Probe(self.name, base + delta, base, delta))
        return probes


KINDS: dict[str, ProbeKind] = {}


def register(cls: type[ProbeKind]) -> type[ProbeKind]:
    """Class decorator: add a kind to ``KINDS`` (registration order is the canonical order)."""
    KINDS[cls.name] = cls()
    return cls


def _keep_bins(x: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
    """``x`` with only the rfft bins ``start:stop`` kept (computed in float64, returned in float32)."""
    freq = torch.fft.rfft(x.to(torch.float64))
    mask = torch.zeros_like(freq)
    mask[start:stop] = 1
    kept: torch.Tensor = torch.fft.irfft(freq * mask, n=x.shape[-1])
    return kept.to(torch.float32)


def _nbins(dim: int) -> int:
    return dim // 2 + 1


@register
class Adversarial(ProbeKind):
    """One FGSM step against a random class of the attacked matrix (the paper's rule picks it)."""

    name, group, needs_matrix = "adversarial", Group.NOISE, True

    def make(self, dim: int, seeds: Sequence[int],
             matrix: torch.Tensor | MatrixRows | None = None) -> list[Probe]:
        """All seeds share one streamed pass over ``matrix``."""
        if matrix is None:
            raise ValueError("an adversarial probe needs the matrix it attacks")
        bases, targets = [], []
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            bases.append(torch.randn(dim, generator=gen))
            targets.append(int(torch.randint(0, matrix.shape[0], (1,), generator=gen)))
        deltas = fgsm_step(torch.stack(bases), matrix, targets)
        return [Probe(self.name, b + d, b, d) for b, d in zip(bases, deltas, strict=True)]


@register
class Structured(ProbeKind):
    name, group = "structured", Group.NOISE

    def draw(self, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.randn(dim, generator=gen)
        return base, _keep_bins(base, 0, _nbins(dim) // 4)


@register
class Gaussian(ProbeKind):
    name, group = "gaussian", Group.NOISE

    def draw(self, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.randn(dim, generator=gen)
        return base, NOISE_SCALE * torch.randn(dim, generator=gen)


@register
class LowFrequency(ProbeKind):
    name, group = "low_frequency", Group.NOISE

    def draw(self, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.randn(dim, generator=gen)
        return base, NOISE_SCALE * _keep_bins(base, 0, _nbins(dim) // 8)


@register
class HighFrequency(ProbeKind):
    name, group = "high_frequency", Group.NOISE

    def draw(self, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.randn(dim, generator=gen)
        return base, NOISE_SCALE * _keep_bins(base, _nbins(dim) // 2, None)


@register
class TokenFocus(ProbeKind):
    """A quarter of the positions amplified (x3 on top of the base)."""

    name, group = "token_focus", Group.ATTENTION

    def draw(self, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.randn(dim, generator=gen)
        mask = torch.zeros(dim)
        mask[torch.randperm(dim, generator=gen)[:dim // 4]] = 3.0
        return base, base * mask


@register
class AttentionPattern(ProbeKind):
    """A periodic pattern (8 periods over the input) plus a little noise, from a zero base."""

    name, group = "attention_pattern", Group.ATTENTION

    def draw(self, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(dim, dtype=torch.float32)
        pattern = 2.0 * torch.sin(positions * (6.28 / (dim / 8)))
        return torch.zeros(dim), pattern + 0.2 * torch.randn(dim, generator=gen)


@register
class HeadSpecific(ProbeKind):
    """Strong noise in 1-3 of 8 equal head slices, weak noise elsewhere, from a zero base."""

    name, group = "head_specific", Group.ATTENTION

    def draw(self, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        heads, head_dim = 8, dim // 8
        x = 0.1 * torch.randn(dim, generator=gen)
        count = int(torch.randint(1, 4, (1,), generator=gen))
        for h in torch.randperm(heads, generator=gen)[:count].tolist():
            x[h * head_dim:(h + 1) * head_dim] = 2.0 * torch.randn(head_dim, generator=gen)
        return torch.zeros(dim), x


def kinds_of(group: Group) -> tuple[str, ...]:
    return tuple(name for name, kind in KINDS.items() if kind.group is group)


NOISE_KINDS: tuple[str, ...] = kinds_of(Group.NOISE)
ATTENTION_KINDS: tuple[str, ...] = kinds_of(Group.ATTENTION)
ALL_KINDS: tuple[str, ...] = tuple(KINDS)


def kind(name: str) -> ProbeKind:
    """The registered kind called ``name``."""
    if name not in KINDS:
        raise OptionError("kind", name, f"unknown perturbation kind (known: {', '.join(KINDS)})")
    return KINDS[name]


def make_probes(name: str, dim: int, seeds: Sequence[int],
                matrix: torch.Tensor | MatrixRows | None = None) -> list[Probe]:
    """The probes of kind ``name`` for an input dimension ``dim``, one per seed.

    ``matrix`` (shape ``(classes, dim)``, a tensor or ``MatrixRows``) is the attacked matrix,
    required by kinds that ``needs_matrix`` (``adversarial``).
    """
    return kind(name).make(dim, seeds, matrix)


def make_probe(name: str, dim: int, matrix: torch.Tensor | MatrixRows | None = None,
               seed: int = 0) -> Probe:
    """``make_probes`` for a single seed."""
    return make_probes(name, dim, [seed], matrix)[0]
