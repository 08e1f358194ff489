"""Where the vocabulary matrix and each block's MLP matrices are, in any supported naming scheme.

The independence test reads MLP matrices *neuron-major*: one row per hidden neuron, one column
per residual dimension. Most layouts store the input matrices (gate/up) that way and the output
matrix (down) transposed; GPT-2's ``Conv1D`` stores both the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tensorguard.architecture import block_index
from tensorguard.loading import ModelSource

#: Token-embedding (vocabulary x hidden) matrices, input embeddings first, then output heads.
VOCAB_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight",
                  "tok_embeddings.weight", "shared.weight", "lm_head.weight", "embed_out.weight")

# Block-relative names (after ``<stack>.<index>.``) of MLP matrices; ``True``: stored (in, out),
# i.e. GPT-2 Conv1D. Input matrices are neuron-major unless transposed; output matrices are not.
_GATE = {"mlp.gate_proj.weight": False, "feed_forward.w1.weight": False,
         "layer.1.DenseReluDense.wi_0.weight": False}
_UP = {"mlp.up_proj.weight": False, "feed_forward.w3.weight": False, "mlp.c_fc.weight": True,
       "intermediate.dense.weight": False, "mlp.dense_h_to_4h.weight": False, "mlp.fc1.weight": False,
       "mlp.fc_in.weight": False, "layer.1.DenseReluDense.wi.weight": False,
       "layer.1.DenseReluDense.wi_1.weight": False}
_DOWN = {"mlp.down_proj.weight": False, "feed_forward.w2.weight": False, "mlp.c_proj.weight": True,
         "output.dense.weight": False, "mlp.dense_4h_to_h.weight": False, "mlp.fc2.weight": False,
         "mlp.fc_out.weight": False, "layer.1.DenseReluDense.wo.weight": False}
_FUSED_GATE_UP = "mlp.gate_up_proj.weight"  # Phi-3: gate rows, then up rows


def is_vocab_matrix(name: str) -> bool:
    """Whether ``name`` is a token embedding or output head (rows indexed by vocabulary)."""
    return any(name == s or name.endswith("." + s) for s in VOCAB_SUFFIXES)


def vocab_matrix(source: ModelSource) -> str | None:
    """The name of the model's token-embedding matrix (an output head if it has none)."""
    for suffix in VOCAB_SUFFIXES:
        for info in source.matrices():
            if info.name == suffix or info.name.endswith("." + suffix):
                return info.name
    return None


@dataclass(frozen=True)
class NeuronMatrix:
    """One MLP matrix, read neuron-major; ``rows`` selects half of a fused gate/up matrix."""

    name: str
    kind: str  # gate | up | down
    transpose: bool  # stored (residual, neuron): transpose on reading
    rows: tuple[int, int] | None = None

    def read(self, source: ModelSource) -> torch.Tensor:
        """The matrix as float32, one row per neuron."""
        if self.rows is not None:
            return source.read_rows(self.name, *self.rows, dtype=torch.float32)
        tensor = source.read(self.name, dtype=torch.float32)
        return tensor.t().contiguous() if self.transpose else tensor


@dataclass(frozen=True)
class MlpBlock:
    """The MLP of one transformer block: ``first`` and ``second`` give independent neuron matchings."""

    key: str  # e.g. "model.layers.3"
    first: NeuronMatrix
    second: NeuronMatrix
    neurons: int

    @property
    def scheme(self) -> str:
        """``gate/up`` (gated MLP) or ``up/down``: only blocks of one scheme are comparable."""
        return f"{self.first.kind}/{self.second.kind}"


def _split(name: str) -> tuple[str, str] | None:
    index = block_index(name)
    if index is None:
        return None
    marker = f".{index}."
    at = name.find(marker)
    return name[:at + len(marker) - 1], name[at + len(marker):]


def mlp_blocks(source: ModelSource) -> list[MlpBlock]:
    """Every block whose MLP has two recognised matrices, in stack then index order."""
    found: dict[str, dict[str, NeuronMatrix]] = {}
    for info in source.matrices():
        parts = _split(info.name)
        if parts is None:
            continue
        key, rest = parts
        slot = found.setdefault(key, {})
        if rest == _FUSED_GATE_UP:
            half = info.shape[0] // 2
            slot["gate"] = NeuronMatrix(info.name, "gate", False, (0, half))
            slot["up"] = NeuronMatrix(info.name, "up", False, (half, 2 * half))
        for kind, table in (("gate", _GATE), ("up", _UP)):
            if rest in table:
                slot[kind] = NeuronMatrix(info.name, kind, table[rest])
        if rest in _DOWN:
            slot["down"] = NeuronMatrix(info.name, "down", not _DOWN[rest])
    blocks = []
    for key in sorted(found, key=lambda k: (k.rsplit(".", 1)[0], int(k.rsplit(".", 1)[1]))):
        slot = found[key]
        pair = ((slot["gate"], slot["up"]) if "gate" in slot and "up" in slot else
                (slot["up"], slot["down"]) if "up" in slot and "down" in slot else None)
        if pair is None:
            continue
        first = pair[0]
        info = source.info(first.name)
        neurons = (first.rows[1] - first.rows[0] if first.rows else
                   info.shape[1] if first.transpose else info.shape[0])
        blocks.append(MlpBlock(key, pair[0], pair[1], neurons))
    return blocks
