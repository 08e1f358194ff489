"""What the registry says about a whole model: its vocabulary matrices and each block's MLP.

Read off the registry's slots and axes, so it holds for every registered scheme at once.
Functions take the model's tensor shapes (``name -> shape``), never the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tensorguard.architectures.registry import MLP_SLOTS, VOCAB_SLOTS, Slot, Space, lookup

Shapes = Mapping[str, Sequence[int]]


def is_vocab_matrix(name: str) -> bool:
    """Whether ``name`` is a token embedding or an output head (rows indexed by vocabulary)."""
    located = lookup(name)
    return located is not None and located.slot in VOCAB_SLOTS


def vocab_matrices(shapes: Shapes) -> list[str]:
    """The 2-D vocabulary matrices, input embeddings first, then output heads (name order within)."""
    found = [(VOCAB_SLOTS.index(loc.slot), name) for name, shape in shapes.items()
             if len(shape) == 2 and (loc := lookup(name)) is not None and loc.slot in VOCAB_SLOTS
             and loc.weight.axes[0] is Space.VOCAB]
    return [name for _, name in sorted(found)]


def vocab_matrix(shapes: Shapes) -> str | None:
    """The token-embedding matrix (an output head if there is none)."""
    found = vocab_matrices(shapes)
    return found[0] if found else None


@dataclass(frozen=True)
class NeuronMatrix:
    """One MLP matrix seen neuron-major; ``rows`` selects one half of a fused gate/up matrix."""

    name: str
    kind: str  # gate | up | down
    transpose: bool  # stored (residual, neuron): transpose to read one row per neuron
    rows: tuple[int, int] | None = None


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


def _neuron_matrices(name: str, shape: Sequence[int]) -> dict[str, NeuronMatrix]:
    located = lookup(name)
    if located is None or located.slot not in MLP_SLOTS or len(shape) != 2:
        return {}
    axes = located.weight.axes
    if located.slot is Slot.GATE_UP:  # fused: gate rows, then up rows
        half = shape[0] // 2
        return {"gate": NeuronMatrix(name, "gate", False, (0, half)),
                "up": NeuronMatrix(name, "up", False, (half, 2 * half))}
    kind = located.slot.value
    return {kind: NeuronMatrix(name, kind, axes.index(Space.NEURON) == 1)}


def block_order(key: str) -> tuple[str, int]:
    """Sort key of a block key (``model.layers.12``): its stack, then its index as a number."""
    stack, index = key.rsplit(".", 1)
    return stack, int(index)


def mlp_blocks(shapes: Shapes) -> list[MlpBlock]:
    """Every block whose MLP has two recognised matrices, in stack then index order."""
    found: dict[str, dict[str, NeuronMatrix]] = {}
    for name, shape in shapes.items():
        located = lookup(name)
        if located is not None and located.block_key is not None:
            found.setdefault(located.block_key, {}).update(_neuron_matrices(name, shape))
    blocks = []
    for key in sorted(found, key=block_order):
        slot = found[key]
        pair = ((slot["gate"], slot["up"]) if "gate" in slot and "up" in slot else
                (slot["up"], slot["down"]) if "up" in slot and "down" in slot else None)
        if pair is None:
            continue
        first = pair[0]
        shape = shapes[first.name]
        neurons = (first.rows[1] - first.rows[0] if first.rows else
                   shape[1] if first.transpose else shape[0])
        blocks.append(MlpBlock(key, pair[0], pair[1], neurons))
    return blocks
