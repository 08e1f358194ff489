"""Function-preserving renaming of a Llama-style model: how a derivation is hidden from cosine.

Permuting the residual dimensions (consistently in every tensor), the attention heads (KV heads
and their query groups together, so GQA stays intact) and the MLP neurons of each block leaves
the model's function unchanged. Applied tensor by tensor, so a large model can be disguised
while streaming; used to check that ``compare`` sees through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tensorguard.architecture import block_index


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class Renaming:
    """A seeded renaming of a Llama-style model with these dimensions."""

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

    def apply(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The renamed version of tensor ``name`` (Hugging Face Llama names)."""
        res = self.residual
        if name.endswith("norm.weight"):
            return tensor[res]
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            return tensor[:, res]
        block = block_index(name)
        if block is None:
            return tensor
        q_rows, kv_rows = self.head_rows(block)
        if name.endswith("q_proj.weight"):
            return tensor[q_rows][:, res]
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            return tensor[kv_rows][:, res]
        if name.endswith("o_proj.weight"):
            return tensor[res][:, q_rows]
        if name.endswith(("gate_proj.weight", "up_proj.weight")):
            return tensor[self.neurons(block)][:, res]
        if name.endswith("down_proj.weight"):
            return tensor[res][:, self.neurons(block)]
        return tensor
