"""The types of the architecture registry and the name lookup every module derives from.

A ``Scheme`` is one naming convention (Llama-style ``model.layers.N``, GPT-2, BERT, ...): the full
Hugging Face name of every weight it may hold, what each weight is for (its ``Slot``) and which
space each stored axis indexes (``Space``: the residual stream, the vocabulary, the MLP neurons,
the query or key/value heads, ...). Roles, MLP anatomy, the vocabulary matrix, renaming, the
header summary and the synthetic generators are all read off these records; the records
themselves live in ``schemes.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache


class Role(str, Enum):
    """The paper's layer types (its fingerprint groups tensors by them)."""

    EMBEDDING = "embedding"
    ATTENTION = "attention"
    FFN = "ffn"
    NORM = "norm"
    OTHER = "other"


class Space(str, Enum):
    """What one axis of a stored weight indexes."""

    RESIDUAL = "residual"  # the hidden size: the stream every block reads from and writes to
    VOCAB = "vocab"
    POSITION = "position"
    TOKEN_TYPE = "token_type"
    NEURON = "neuron"  # MLP intermediate units
    GATE_UP = "gate_up"  # fused: gate neurons, then up neurons
    Q = "q"  # query heads x head size (also the attention output's input)
    KV = "kv"  # key/value heads x head size
    QKV = "qkv"  # fused: query, key and value rows
    HEAD_DIM = "head_dim"  # within one head (per-head q/k norms)
    HEADS = "heads"  # one entry per attention head (T5 relative position bias)
    BUCKET = "bucket"  # T5 relative position buckets


class Site(str, Enum):
    """Where a norm weight acts in its block: which matrices read what it scales."""

    ATTENTION_IN = "attention_in"  # the input of q, k and v
    MLP_IN = "mlp_in"  # the input of gate and up (a block without one: its MLP reads the attention's)
    ATTENTION_OUT = "attention_out"  # the attention's output, before it joins the residual stream
    MLP_OUT = "mlp_out"  # the MLP's output, likewise


class QkvOrder(str, Enum):
    """How the query, key and value parts of a fused ``qkv`` axis are ordered."""

    CONCAT = "concat"  # every query head, then every key head, then every value head (Phi-3, GPT-2)
    GROUPED = "grouped"  # (kv_heads, heads / kv_heads + 2, head_dim): each KV group's query heads,
    # its key, its value (Falcon; GPT-NeoX is the case kv_heads = heads: (heads, 3, head_dim))


class Slot(str, Enum):
    """What a weight is for."""

    EMBED = "embed"
    POSITION_EMBED = "position_embed"
    TOKEN_TYPE_EMBED = "token_type_embed"
    LM_HEAD = "lm_head"
    Q = "q"
    K = "k"
    V = "v"
    O = "o"  # noqa: E741  (the attention output projection)
    QKV = "qkv"
    RELATIVE_BIAS = "relative_bias"
    GATE = "gate"
    UP = "up"
    DOWN = "down"
    GATE_UP = "gate_up"
    NORM = "norm"


#: The paper's role of each slot (a derived view: the fingerprint groups tensors by it).
SLOT_ROLES: dict[Slot, Role] = {
    Slot.EMBED: Role.EMBEDDING, Slot.POSITION_EMBED: Role.EMBEDDING,
    Slot.TOKEN_TYPE_EMBED: Role.EMBEDDING, Slot.RELATIVE_BIAS: Role.EMBEDDING,
    Slot.LM_HEAD: Role.OTHER,  # the paper's substring rules see no layer type in "lm_head"
    Slot.Q: Role.ATTENTION, Slot.K: Role.ATTENTION, Slot.V: Role.ATTENTION, Slot.O: Role.ATTENTION,
    Slot.QKV: Role.ATTENTION,
    Slot.GATE: Role.FFN, Slot.UP: Role.FFN, Slot.DOWN: Role.FFN, Slot.GATE_UP: Role.FFN,
    Slot.NORM: Role.NORM,
}
MLP_SLOTS = frozenset({Slot.GATE, Slot.UP, Slot.DOWN, Slot.GATE_UP})
#: The space a linear weight reads from (it writes to its other stored axis).
SLOT_INPUTS: dict[Slot, Space] = {
    Slot.Q: Space.RESIDUAL, Slot.K: Space.RESIDUAL, Slot.V: Space.RESIDUAL, Slot.QKV: Space.RESIDUAL,
    Slot.GATE: Space.RESIDUAL, Slot.UP: Space.RESIDUAL, Slot.GATE_UP: Space.RESIDUAL,
    Slot.O: Space.Q, Slot.DOWN: Space.NEURON, Slot.LM_HEAD: Space.RESIDUAL,
}
VOCAB_SLOTS = (Slot.EMBED, Slot.LM_HEAD)  # in the order a vocabulary matrix is chosen


@dataclass(frozen=True)
class Weight:
    """One weight of a scheme. ``name`` is its full Hugging Face name, with ``{block}`` standing
    for the block index inside a block layout; ``axes`` say what each stored axis indexes (a GPT-2
    ``Conv1D`` stores ``(in, out)``, every ``nn.Linear`` ``(out, in)``). ``optional``: not every
    checkpoint of the scheme has it (biases, extra norms of later versions); the synthetic
    generators leave it out. ``role`` overrides the slot's role where the paper's rules differ.

    A norm's ``feeds`` says where it acts (``Site``); ``feeds_instead`` is ``(weight, sites)``:
    where it acts when its block also holds that weight (Gemma 2/3's ``post_attention_layernorm``
    scales the attention output, because their ``pre_feedforward_layernorm`` feeds the MLP; in
    Llama the same name feeds the MLP). A fused query/key/value weight's ``qkv_order`` says how
    its fused axis is laid out."""

    name: str
    slot: Slot
    axes: tuple[Space, ...]
    optional: bool = False
    role: Role | None = None
    feeds: tuple[Site, ...] = ()
    feeds_instead: tuple[str, tuple[Site, ...]] | None = None
    qkv_order: QkvOrder | None = None

    def meaning(self) -> tuple[object, ...]:
        """What two schemes listing this name must agree on."""
        return self.slot, self.axes, self.feeds, self.feeds_instead, self.qkv_order

    @property
    def paper_role(self) -> Role:
        return self.role or SLOT_ROLES[self.slot]

    @property
    def module(self) -> str:
        """The name without ``.weight``/``.bias``: the module the weight belongs to."""
        return self.name.rsplit(".", 1)[0]

    @property
    def stored_in_out(self) -> bool:
        """A linear weight stored ``(in, out)`` (GPT-2's ``Conv1D``), not ``(out, in)``."""
        return len(self.axes) == 2 and self.axes[0] is SLOT_INPUTS.get(self.slot)


@dataclass(frozen=True)
class Scheme:
    """One naming convention: weights before the blocks, each block's weights, weights after.

    ``bare_root``: a prefix that checkpoints of the bare base model leave out (GPT-2's
    ``transformer.``: the original ``gpt2`` files say ``h.0.attn.c_attn.weight``).
    """

    name: str
    models: str  # which model families use it, for people reading the registry
    before: tuple[Weight, ...]
    blocks: tuple[Weight, ...]
    after: tuple[Weight, ...] = ()
    extra_blocks: tuple[Weight, ...] = ()  # a second stack (T5's decoder); never generated
    bare_root: str = ""

    def weights(self) -> Iterator[Weight]:
        yield from (*self.before, *self.blocks, *self.extra_blocks, *self.after)

    @property
    def stack(self) -> str:
        """The prefix of the blocks' names, e.g. ``model.layers`` (``{stack}.{block}.{module}``)."""
        return self.blocks[0].name.split(".{block}.", 1)[0]

    def modules(self, weights: tuple[Weight, ...], *, relative: bool = False) -> tuple[str, ...]:
        """The distinct modules of ``weights`` in order; ``relative``: without the block prefix."""
        names = (w.module.split(".{block}.", 1)[1] if relative else w.module for w in weights)
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Located:
    """A tensor name resolved against the registry."""

    scheme: Scheme
    weight: Weight
    block: int | None  # index of the block holding it
    block_key: str | None  # the name up to the block index, e.g. ``model.layers.3``

    @property
    def slot(self) -> Slot:
        return self.weight.slot


@dataclass
class Registry:
    """Every scheme, and an index from block-normalised names to the weight they denote."""

    schemes: dict[str, Scheme] = field(default_factory=dict)
    _index: dict[str, tuple[Scheme, Weight]] = field(default_factory=dict)

    def register(self, scheme: Scheme) -> Scheme:
        """Add ``scheme``; a name already claimed must mean the same (``Weight.meaning``)."""
        if scheme.name in self.schemes:
            raise ValueError(f"scheme {scheme.name!r} is registered twice")
        self.schemes[scheme.name] = scheme
        for weight in scheme.weights():
            keys = [weight.name]
            if scheme.bare_root and weight.name.startswith(scheme.bare_root):
                keys.append(weight.name.removeprefix(scheme.bare_root))
            for key in keys:
                claimed = self._index.setdefault(key, (scheme, weight))[1]
                if claimed.meaning() != weight.meaning():
                    raise ValueError(f"{key}: {scheme.name} and another scheme disagree on it")
        lookup.cache_clear()
        return scheme

    def find(self, name: str) -> Located | None:
        """The weight ``name`` denotes, allowing wrapper prefixes such as ``language_model.``."""
        match = _BLOCK_NUMBER.search(name)
        normal = name if match is None else (
            name[:match.start(1)] + "{block}" + name[match.end(1):])
        parts = normal.split(".")
        for i in range(len(parts)):
            hit = self._index.get(".".join(parts[i:]))
            if hit is not None:
                scheme, weight = hit
                templated = "{block}" in weight.name
                block = int(match.group(1)) if templated and match else None
                key = name[:match.end(1)] if templated and match else None
                return Located(scheme, weight, block, key)
        return None


#: Model types (``config.json``'s ``model_type``, GGUF's ``general.architecture``) whose norm
#: layers scale by ``1 + weight`` rather than ``weight`` (GGUF stores Gemma's norms plus 1; the
#: GGUF reader subtracts it, so both file kinds hold the Hugging Face value).
NORM_PLUS_ONE = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"})

_BLOCK_NUMBER = re.compile(r"(?:^|\.)(\d+)\.")
REGISTRY = Registry()


@lru_cache(maxsize=65536)
def lookup(name: str) -> Located | None:
    """What the registry knows of tensor ``name`` (``None``: no scheme has it)."""
    return REGISTRY.find(name)
