"""The weight signature: a small, rename-proof summary of a model for catalogue look-ups.

Why these numbers. A function-preserving disguise may permute or rotate the residual basis
(``E -> E R``, ``W_in -> W_in R``, ``W_out -> Rᵀ W_out``), permute heads and neurons, rescale
query/key, value/output and up/down pairs against each other, and move norm weights into the
next matrices. Products that the forward pass itself forms are untouched by all of that, and
projecting them on the model's own token embeddings removes the residual basis (HuRef's
invariant terms, Zeng et al. 2024). For a fixed set of tokens (``tokens``: a min-hash of token
strings) with normalised embedding rows ``Ê`` (the first norm's view of a token: centred too for
LayerNorm models), and norm weights folded into the matrices they scale (``anatomy``):

* ``embed``  ``Ê Êᵀ``: the cosine Gram of the embeddings;
* per block ``qk``  ``Ê Σ_h Q̃_hᵀ K̃_g(h) Êᵀ`` (RoPE-free attention logits between two tokens);
  ``ov``  ``Ê Σ_h O_h Ṽ_g(h) Êᵀ`` (what attending to token j writes along token i);
  ``mlp``  ``(Ê D)(Ê Ũᵀ)ᵀ`` (down times up: blind to neuron order and up/down rescaling);
  ``gate``  ``(Ê G̃ᵀ)(Ê G̃ᵀ)ᵀ`` (gated MLPs; zero otherwise).

Biases and per-head q/k norms are left out. Each matrix is standardised over its off-diagonal
entries (the diagonal carries what every trained model shares: a token's similarity to itself)
and stored as float16. Nothing depends on the width, so pruned or differently shaped models stay
comparable (``similarity``).

Size: ``EMBED_TOKENS``² + ``blocks x kinds x k²`` float16 values with ``k = BLOCK_TOKENS`` (fewer
for very deep models, so the total stays under ``BUDGET_BYTES``). Computing it streams every block
matrix once in row blocks (``ModelSource.row_blocks``) and multiplies it by a ``k``-row matrix:
about the cost of reading the model as float32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from tensorguard.architectures import QkvOrder, Site
from tensorguard.errors import TensorguardError
from tensorguard.loading import ModelInput, ModelSource, opened
from tensorguard.signatures.anatomy import Anatomy, Block, Matrix, anatomy
from tensorguard.signatures.tokens import select_tokens, token_strings

SCHEMA = "tensorguard.signature/1"
EMBED_TOKENS = 128
BLOCK_TOKENS = 32
MIN_TOKENS = 8
#: Upper bound of a signature's array bytes; deep models get fewer block tokens to fit.
BUDGET_BYTES = 256 * 1024
KINDS = ("qk", "ov", "mlp", "gate")
SYMMETRIC = frozenset({"embed", "gate"})
_MAGIC = b"TGSIG\x01"
#: Embeddings up to this many entries (8 MB as float32) are read whole and their token rows picked
#: in memory; larger ones are read a token row at a time.
WHOLE_EMBEDDING = 1 << 21


@dataclass(frozen=True)
class Signature:
    """A model's weight signature (see the module docstring); arrays are standardised float16.
    A kind a model lacks (``gate`` without a gated MLP) is all zeros."""

    tokens: tuple[str, ...]  # EMBED_TOKENS token keys, in hash order
    embed: np.ndarray  # (len(tokens), len(tokens))
    block_tokens: int  # k: block matrices use tokens[:k]
    block_index: tuple[int, ...]  # the model's block numbers
    blocks: np.ndarray  # (blocks, len(kinds), k, k)
    kinds: tuple[str, ...]
    hidden: int
    vocab: int

    @property
    def nbytes(self) -> int:
        return len(self.to_bytes())

    def to_bytes(self) -> bytes:
        """Deterministic binary form: magic, JSON header length, JSON header, float16 arrays."""
        header = json.dumps({"schema": SCHEMA, "tokens": list(self.tokens),
                             "block_tokens": self.block_tokens, "block_index": list(self.block_index),
                             "blocks": list(self.blocks.shape), "kinds": list(self.kinds),
                             "hidden": self.hidden, "vocab": self.vocab},
                            ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return (_MAGIC + struct.pack("<I", len(header)) + header
                + self.embed.astype("<f2").tobytes() + self.blocks.astype("<f2").tobytes())

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "signature") -> Signature:
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("not a tensorguard signature")
            (length,) = struct.unpack_from("<I", data, len(_MAGIC))
            start = len(_MAGIC) + 4
            head = json.loads(data[start:start + length].decode("utf-8"))
            if head.get("schema") != SCHEMA:
                raise ValueError(f"schema {head.get('schema')!r} is not {SCHEMA!r}")
            n = len(head["tokens"])
            arrays = np.frombuffer(data, dtype="<f2", offset=start + length)
            embed = arrays[: n * n].reshape(n, n)
            blocks = arrays[n * n:].reshape(head["blocks"])
            if not np.isfinite(arrays).all():
                raise ValueError("values that are not finite")
            return cls(tuple(head["tokens"]), embed, int(head["block_tokens"]),
                       tuple(head["block_index"]), blocks, tuple(head["kinds"]), int(head["hidden"]),
                       int(head["vocab"]))
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
            raise TensorguardError(f"{where}: corrupt signature ({exc})") from None


def off_diagonal(n: int, symmetric: bool) -> np.ndarray:
    """The entries a kind is compared on: the upper triangle if symmetric, else all off the diagonal."""
    return np.triu(np.ones((n, n), dtype=bool), 1) if symmetric else ~np.eye(n, dtype=bool)


def _standardise(m: torch.Tensor, symmetric: bool) -> np.ndarray:
    """Z-score over the off-diagonal entries; the diagonal set to 0."""
    m = m.double()
    values = m[torch.from_numpy(off_diagonal(m.shape[0], symmetric))]
    z = (m - values.mean()) / values.std().clamp_min(1e-30)
    z.fill_diagonal_(0.0)
    return z.numpy().astype(np.float16)


def _block_token_count(blocks: int) -> int:
    per_block = max(1, blocks) * len(KINDS) * 2
    room = max(0, BUDGET_BYTES - 2 * EMBED_TOKENS**2) // per_block
    return max(MIN_TOKENS, min(BLOCK_TOKENS, math.isqrt(room)))


# ---- reading the model: tokens through each matrix, streamed in row blocks

def _through(source: ModelSource, m: Matrix, x: torch.Tensor) -> torch.Tensor:
    """Tokens ``x`` (t, residual) through ``m``'s residual axis: (t, other axis)."""
    width = source.info(m.name).shape[m.residual_axis]
    if width != x.shape[1]:
        raise TensorguardError(f"{source.name}: {m.name} has a residual axis of {width}, the embedding "
                               f"{x.shape[1]}")
    if m.residual_axis == 1:  # stored (other, residual): x Wᵀ, block by block of rows
        out = torch.empty(x.shape[0], m.other)
        for first, rows in source.row_blocks(m.name, dtype=torch.float32):
            out[:, first:first + rows.shape[0]] = x @ rows.T
        return out
    out = torch.zeros(x.shape[0], m.other)  # stored (residual, other): x W, summed over row blocks
    for first, rows in source.row_blocks(m.name, dtype=torch.float32):
        out += x[:, first:first + rows.shape[0]] @ rows
    return out


def _geometry(where: str, heads: int, q_size: int, kv_size: int) -> tuple[int, int]:
    """(head size, key/value heads), checked against the shapes."""
    head_dim = q_size // heads if heads else 0
    kv_heads = kv_size // head_dim if head_dim else 0
    if not head_dim or head_dim * heads != q_size or kv_heads * head_dim != kv_size \
            or not kv_heads or heads % kv_heads:
        raise TensorguardError(f"{where}: {heads} query heads do not fit query width {q_size} and "
                               f"key/value width {kv_size}")
    return head_dim, kv_heads


def _split_fused(where: str, fused: torch.Tensor, order: QkvOrder | None, heads: int | None,
                 q_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t, width = fused.shape
    kv_size = (width - q_size) // 2
    if q_size + 2 * kv_size != width:
        raise TensorguardError(f"{where}: fused query/key/value width {width} does not hold a query "
                               f"width of {q_size}")
    if order is not QkvOrder.GROUPED:
        return fused[:, :q_size], fused[:, q_size:q_size + kv_size], fused[:, q_size + kv_size:]
    assert heads is not None  # a grouped order always needs the head count (see _attention)
    head_dim, kv_heads = _geometry(where, heads, q_size, kv_size)
    group = heads // kv_heads
    view = fused.view(t, kv_heads, group + 2, head_dim)
    return (view[:, :, :group].reshape(t, -1), view[:, :, group].reshape(t, -1),
            view[:, :, group + 1].reshape(t, -1))


def _expand_groups(where: str, m: torch.Tensor, heads: int, q_size: int) -> torch.Tensor:
    """(t, kv_heads x head_dim) -> (t, heads x head_dim): each key/value head repeated for its
    group of query heads (grouped-query attention)."""
    head_dim, kv_heads = _geometry(where, heads, q_size, m.shape[1])
    t, group = m.shape[0], heads // kv_heads
    return m.view(t, kv_heads, 1, head_dim).expand(t, kv_heads, group, head_dim).reshape(t, -1)


def _attention(source: ModelSource, block: Block, a: Anatomy, x: torch.Tensor,
               e_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``qk`` and ``ov`` of one block (``None`` when the head count they need is unknown)."""
    q_size = block.o.other
    if block.qkv is not None:
        kv_size = (block.qkv.other - q_size) // 2
        needs_heads = kv_size != q_size or block.qkv_order is QkvOrder.GROUPED
    else:
        assert block.k is not None
        needs_heads = block.k.other != q_size
    if needs_heads and a.heads is None:
        return None
    heads = a.heads if needs_heads else None
    where = f"{source.name} ({block.key}; heads from {a.heads_from})"
    if block.qkv is not None:
        q, k, v = _split_fused(where, _through(source, block.qkv, x), block.qkv_order, heads, q_size)
    else:
        assert block.q is not None and block.v is not None and block.k is not None
        q, k, v = (_through(source, m, x) for m in (block.q, block.k, block.v))
    if heads is not None and k.shape[1] != q_size:
        k, v = (_expand_groups(where, m, heads, q_size) for m in (k, v))
    o = _through(source, block.o, e_out)
    return q @ k.T, o @ v.T


def _mlp(source: ModelSource, block: Block, x: torch.Tensor,
         e_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``mlp`` and ``gate`` (``None`` without a gated MLP) of one block."""
    gate: torch.Tensor | None
    if block.gate_up is not None:  # fused: gate rows, then up rows
        fused = _through(source, block.gate_up, x)
        gate, up = fused[:, :fused.shape[1] // 2], fused[:, fused.shape[1] // 2:]
    else:
        assert block.up is not None
        gate = _through(source, block.gate, x) if block.gate is not None else None
        up = _through(source, block.up, x)
    down = _through(source, block.down, e_out)
    return down @ up.T, None if gate is None else gate @ gate.T


def _block_matrices(source: ModelSource, block: Block, a: Anatomy, e: torch.Tensor) -> np.ndarray:
    def scaled(site: Site) -> torch.Tensor:
        """The tokens as the matrices behind ``site`` see them: times its norm weight."""
        name = block.norm(site)
        if name is None:
            return e
        weight = source.read(name, torch.float32)
        return e * (weight + 1.0 if a.norm_plus_one else weight)

    parts: dict[str, torch.Tensor | None] = {}
    attention = _attention(source, block, a, scaled(Site.ATTENTION_IN), scaled(Site.ATTENTION_OUT))
    if attention is not None:
        parts["qk"], parts["ov"] = attention
    parts["mlp"], parts["gate"] = _mlp(source, block, scaled(Site.MLP_IN), scaled(Site.MLP_OUT))
    zero = np.zeros((e.shape[0], e.shape[0]), dtype=np.float16)
    return np.stack([zero if (m := parts.get(kind)) is None else _standardise(m, kind in SYMMETRIC)
                     for kind in KINDS])


def sample_blocks(count: int, k: int) -> list[int]:
    """``k`` blocks of ``count`` at evenly spaced relative depths, the first and the last among
    them (all of them when ``k >= count``): the same depths in every model, and among the blocks
    ``compare``'s independence test probes (it spaces its own the same way)."""
    if k >= count:
        return list(range(count))
    if k == 1:
        return [count // 2]
    return sorted({round(i * (count - 1) / (k - 1)) for i in range(k)})


def compute_signature(model: ModelInput, *, base: ModelInput | None = None,
                      blocks: int | None = None) -> Signature:
    """The signature of ``model`` (a path or an open source; ``base`` for a LoRA adapter),
    streaming one matrix at a time (float32 maths, float16 result). ``blocks``: only that many
    blocks, at evenly spaced depths (``sample_blocks``); ``None``: every block. A sampled
    signature compares with full ones as a model with fewer blocks does (blocks are aligned in
    order), and reads only its blocks' matrices: ``scan`` queries the catalogue with one."""
    if blocks is not None and blocks < 1:
        raise TensorguardError(f"blocks={blocks}: must be at least 1")
    with opened(model, base=base) as source, torch.no_grad():
        a = anatomy(source)
        every = len(a.blocks)  # the block tokens are those of the full signature: a sample is a subset
        if blocks is not None:
            a = dataclasses.replace(a, blocks=tuple(a.blocks[i] for i in sample_blocks(every, blocks)))
        rows, hidden = source.info(a.embedding).shape
        strings = token_strings(source, rows)
        picked = select_tokens(strings, EMBED_TOKENS)
        if len(picked) < MIN_TOKENS:
            raise TensorguardError(f"{source.name}: fewer than {MIN_TOKENS} usable tokens for a signature")
        if rows * hidden <= WHOLE_EMBEDDING:  # one read costs less than a read per token
            e = source.read(a.embedding, torch.float32)[picked]
        else:
            read = {i: source.read_rows(a.embedding, i, i + 1, torch.float32)[0] for i in sorted(picked)}
            e = torch.stack([read[i] for i in picked])
        if a.centred:
            e = e - e.mean(1, keepdim=True)
        e = e * torch.rsqrt((e * e).mean(1, keepdim=True).clamp_min(1e-30))  # the norm's view
        k = min(len(picked), _block_token_count(every))
        matrices = [_block_matrices(source, b, a, e[:k]) for b in a.blocks]
        stacked = np.stack(matrices) if matrices else np.zeros((0, len(KINDS), k, k), dtype=np.float16)
        return Signature(tuple(str(strings[i]) for i in picked), _standardise(e @ e.T, True), k,
                         tuple(b.index for b in a.blocks), stacked, KINDS, hidden, rows)
