"""Where a model's signature inputs are, read off the architecture registry.

Each block's attention (q, k, v as three matrices or one fused ``qkv`` with its ``QkvOrder``; the
output o), its MLP (gate if gated, up, down; gate and up possibly fused) and the norms acting at
each ``Site``: every fact comes from the registry's records (slots, axes, ``feeds``), so every
registered decoder scheme is read the same way. A block without an MLP-input norm is a parallel
block (Phi-1/2, GPT-J, Falcon-7B): its MLP reads the attention's input norm.

The head geometry is needed only to pair the query heads with their key/value heads under
grouped-query attention and to split a ``GROUPED`` fused matrix; it comes from ``config.json``,
else from GGUF metadata, else it is unknown (the attention parts are then left out for such
models, never guessed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tensorguard.architectures import (
    NORM_PLUS_ONE,
    Located,
    QkvOrder,
    Site,
    Slot,
    Space,
    block_order,
    lookup,
    vocab_matrix,
)
from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_json
from tensorguard.loading import ModelSource

#: Registered schemes the signature refuses, and why (every other scheme is read off its records).
REFUSED = {
    "bert": "a post-norm encoder (its norms follow each sublayer; the signature folds pre-norms)",
    "t5": "an encoder-decoder (its decoder blocks hold two attentions)",
}
_MATRIX_SLOTS = (Slot.Q, Slot.K, Slot.V, Slot.QKV, Slot.O, Slot.GATE, Slot.UP, Slot.GATE_UP, Slot.DOWN)
#: ``config.json`` keys for the number of query heads, in the order they are tried.
_HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")


@dataclass(frozen=True)
class Matrix:
    """A stored matrix and which of its two axes is the residual stream."""

    name: str
    residual_axis: int
    other: int  # the length of its other axis


@dataclass(frozen=True)
class Block:
    """One block's signature inputs. Exactly one of ``qkv`` and (``q``, ``k``, ``v``) is set; at
    most one of ``gate_up`` and (``gate``, ``up``); ``norms`` names the norm weight at each site."""

    index: int
    key: str
    o: Matrix
    down: Matrix
    q: Matrix | None = None
    k: Matrix | None = None
    v: Matrix | None = None
    qkv: Matrix | None = None
    qkv_order: QkvOrder | None = None
    gate: Matrix | None = None
    up: Matrix | None = None
    gate_up: Matrix | None = None
    norms: Mapping[Site, str] | None = None

    def norm(self, site: Site) -> str | None:
        return (self.norms or {}).get(site)


@dataclass(frozen=True)
class Anatomy:
    """A model as the signature reads it.

    ``heads``: query heads (``None``: unknown) and where that came from; ``norm_plus_one``: norms
    scale by ``1 + weight`` (Gemma); ``centred``: its norms are LayerNorms (they have a bias), so a
    token is centred before it is scaled.
    """

    embedding: str
    blocks: tuple[Block, ...]
    heads: int | None
    heads_from: str
    norm_plus_one: bool
    centred: bool


def _matrix(located: Located, name: str, shape: tuple[int, ...]) -> Matrix:
    axis = located.weight.axes.index(Space.RESIDUAL)
    return Matrix(name, axis, shape[1 - axis])


def _norm_sites(norms: list[tuple[Located, str]]) -> dict[Site, str]:
    """Which norm weight acts at each site of one block (``feeds``, or ``feeds_instead`` when the
    block holds the weight it names); the MLP of a parallel block reads the attention's norm."""
    present = {loc.weight.name for loc, _ in norms}
    sites: dict[Site, str] = {}
    for loc, name in norms:
        instead = loc.weight.feeds_instead
        for site in instead[1] if instead and instead[0] in present else loc.weight.feeds:
            sites[site] = name
    if Site.MLP_IN not in sites and Site.ATTENTION_IN in sites:
        sites[Site.MLP_IN] = sites[Site.ATTENTION_IN]
    return sites


def _block(key: str, found: dict[Slot, Matrix], qkv_order: QkvOrder | None,
           norms: list[tuple[Located, str]]) -> Block | None:
    """The block, or ``None`` when it lacks an attention or an MLP the signature can read."""
    attention = Slot.QKV in found or all(s in found for s in (Slot.Q, Slot.K, Slot.V))
    mlp = Slot.GATE_UP in found or Slot.UP in found
    if not (attention and mlp and Slot.O in found and Slot.DOWN in found):
        return None
    fused = Slot.QKV in found
    return Block(block_order(key)[1], key, found[Slot.O], found[Slot.DOWN],
                 q=None if fused else found[Slot.Q], k=None if fused else found[Slot.K],
                 v=None if fused else found[Slot.V], qkv=found.get(Slot.QKV), qkv_order=qkv_order,
                 gate=found.get(Slot.GATE), up=found.get(Slot.UP), gate_up=found.get(Slot.GATE_UP),
                 norms=_norm_sites(norms))


def _config(source: ModelSource) -> dict[str, Any]:
    """``config.json`` beside the model (the text model's part of a multimodal one), or ``{}``."""
    path = source.root / "config.json"
    if not path.is_file():
        return {}
    data = read_json(path, what="a model config")
    if not isinstance(data, dict):
        return {}
    text = data.get("text_config")
    return {**data, **text} if isinstance(text, dict) else data


def _heads(source: ModelSource, config: Mapping[str, Any]) -> tuple[int | None, str]:
    for key in _HEAD_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, f"config.json {key}"
    claims = source.claims
    if claims is not None and claims.head_count:
        return claims.head_count, "GGUF metadata"
    return None, "unknown"


def anatomy(source: ModelSource) -> Anatomy:
    """Find the embedding and every block the signature reads; refuse unsupported schemes."""
    shapes = {name: info.shape for name, info in source.tensors.items()}
    embedding = vocab_matrix(shapes)
    if embedding is None:
        raise TensorguardError(f"{source.root}: no token-embedding matrix; cannot compute a signature")
    found: dict[str, dict[Slot, Matrix]] = {}
    qkv_orders: dict[str, QkvOrder | None] = {}  # every fused qkv weight of the registry has one
    norms: dict[str, list[tuple[Located, str]]] = {}
    schemes: set[str] = set()
    for name, shape in shapes.items():
        located = lookup(name)
        if located is None or located.block_key is None:
            continue
        key = located.block_key
        if located.slot is Slot.NORM and len(shape) == 1 and located.weight.axes == (Space.RESIDUAL,):
            norms.setdefault(key, []).append((located, name))
        elif located.slot in _MATRIX_SLOTS and len(shape) == 2:
            schemes.add(located.scheme.name)
            found.setdefault(key, {})[located.slot] = _matrix(located, name, shape)
            if located.slot is Slot.QKV:
                qkv_orders[key] = located.weight.qkv_order
    refused = sorted(schemes & set(REFUSED))
    if refused:
        raise TensorguardError(f"{source.root}: the weight signature does not support the {refused[0]} "
                               f"scheme: {REFUSED[refused[0]]}")
    blocks = [b for key in sorted(found, key=block_order)
              if (b := _block(key, found[key], qkv_orders.get(key), norms.get(key, [])))]
    config = _config(source)
    heads, heads_from = _heads(source, config)
    model_type = str(config.get("model_type") or (source.claims.architecture if source.claims else ""))
    first_norm = blocks[0].norm(Site.ATTENTION_IN) if blocks else None
    centred = first_norm is not None and first_norm.removesuffix("weight") + "bias" in shapes
    return Anatomy(embedding, tuple(blocks), heads, heads_from, model_type in NORM_PLUS_ONE, centred)
