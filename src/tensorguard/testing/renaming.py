"""Function-preserving renaming of hidden units: how a derivation is hidden from direct cosine.

Permuting the residual dimensions (consistently in every tensor), the attention heads (KV heads
and their query groups together, so GQA stays intact) and the MLP neurons of each block leaves
the model's function unchanged. Which axis of which weight to permute is read off the registry's
axes, so any scheme with separate q/k/v and gate/up matrices can be renamed. Applied tensor by
tensor, so a large model can be disguised while streaming; used to check that ``compare`` and the
catalogue signature see through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tensorguard.architectures.registry import Space, lookup


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class Renaming:
    """A seeded renaming of a model with these dimensions."""

    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    seed: int = 0

    @property
    def residual(self) -> torch.Tensor:
        return _perm(self.hidden, self.seed)

    def head_rows(self, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row orders of q and of k/v in ``block``: KV heads shuffled, query heads with their group."""
        head_dim, group = self.hidden // self.heads, self.heads // self.kv_heads
        kv_order = _perm(self.kv_heads, self.seed + 1000 + block)
        q_heads = torch.cat([g * group + _perm(group, self.seed + 2000 + 64 * block + int(g))
                             for g in kv_order])
        within = torch.arange(head_dim)
        return ((q_heads[:, None] * head_dim + within).reshape(-1),
                (kv_order[:, None] * head_dim + within).reshape(-1))

    def neurons(self, block: int) -> torch.Tensor:
        return _perm(self.intermediate, self.seed + 3000 + block)

    def order(self, space: Space, block: int | None) -> torch.Tensor | None:
        """The new order of an axis indexing ``space`` in ``block`` (``None``: left as it is)."""
        if space is Space.RESIDUAL:
            return self.residual
        if block is None or space not in (Space.Q, Space.KV, Space.NEURON):
            if space in (Space.QKV, Space.GATE_UP):
                raise ValueError(f"renaming fused {space.value} weights is not supported")
            return None
        if space is Space.NEURON:
            return self.neurons(block)
        q_rows, kv_rows = self.head_rows(block)
        return q_rows if space is Space.Q else kv_rows

    def apply(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The renamed version of tensor ``name`` (unchanged if the registry does not know it)."""
        located = lookup(name)
        if located is None:
            return tensor
        for axis, space in enumerate(located.weight.axes):
            order = self.order(space, located.block)
            if order is not None:
                tensor = tensor.index_select(axis, order)
        return tensor
