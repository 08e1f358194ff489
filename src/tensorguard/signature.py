"""The weight signature: a small, rename-proof summary of a model for catalogue look-ups.

Why these numbers. A function-preserving disguise may permute or rotate the residual basis
(``E -> E R``, ``W_in -> W_in R``, ``W_out -> Rᵀ W_out``), permute heads and neurons, rescale
query/key, value/output and up/down pairs against each other, and move norm weights into the
next matrices. Products that the forward pass itself forms are untouched by all of that, and
projecting them on the model's own token embeddings removes the residual basis (HuRef's
invariant terms, Zeng et al. 2024). For a fixed set of tokens (chosen by a hash of the token
*string*, so two tokenizers sharing a string pick it alike) with RMS-normalised embedding rows
``Ê`` (the first norm's view of a token), and norm weights folded into the matrices they feed:

* ``embed``  ``Ê Êᵀ``: the cosine Gram of the embeddings;
* per block ``qk``  ``Ê Σ_h Q̃_hᵀ K̃_g(h) Êᵀ`` (RoPE-free attention logits between two tokens);
  ``ov``  ``Ê Σ_h O_h Ṽ_g(h) Êᵀ`` (what attending to token j writes along token i);
  ``mlp``  ``Ê D Ũᵀ... = (Ê D)(Ê Ũᵀ)ᵀ`` (down times up: blind to neuron order and up/down
  rescaling); ``gate``  ``(Ê G̃ᵀ)(Ê G̃ᵀ)ᵀ`` (gated MLPs).

Each matrix is standardised over its off-diagonal entries (diagonals carry the structure every
trained model shares: a token's similarity to itself) and stored as float16. Two signatures are
compared by Pearson correlation over the tokens they share; blocks are paired by a monotone
alignment, so removed blocks do not shift the comparison. Nothing here depends on the width, so
pruned or differently shaped models remain comparable.

Size: ``EMBED_TOKENS``² + ``blocks x kinds x k²`` float16 values with ``k = BLOCK_TOKENS`` (made
smaller for very deep models so the total stays under ``BUDGET_BYTES``). Computing it streams
every block matrix once in row blocks (``ModelSource.row_blocks``) and multiplies it by a
``k``-row matrix: about the cost of reading the model as float32.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tensorguard.architecture import block_index
from tensorguard.compare.anatomy import vocab_matrix
from tensorguard.errors import TensorguardError
from tensorguard.loading import ModelSource

SCHEMA = "tensorguard.signature/1"
EMBED_TOKENS = 128
BLOCK_TOKENS = 32
#: Upper bound of a signature's array bytes; deep models get fewer block tokens to fit.
BUDGET_BYTES = 256 * 1024
KINDS = ("qk", "ov", "mlp", "gate")
SYMMETRIC = frozenset({"embed", "gate"})
#: Head size assumed when ``config.json`` does not say (Llama, Mistral, Qwen2, SmolLM2 use 64 or
#: state it); only needed for grouped-query attention.
DEFAULT_HEAD_DIM = 64
_MAGIC = b"TGSIG\x01"


# ---- architecture lookup: the one place that knows tensor names (swap for the registry later)

@dataclass(frozen=True)
class BlockNames:
    """The tensors of one transformer block the signature reads (Hugging Face Llama names)."""

    index: int
    attn_norm: str | None
    q: str
    k: str
    v: str
    o: str
    mlp_norm: str | None
    gate: str | None
    up: str
    down: str


@dataclass(frozen=True)
class Anatomy:
    """Where the signature's inputs are: the token embedding, the blocks, the head geometry."""

    embedding: str
    blocks: tuple[BlockNames, ...]
    heads: int
    kv_heads: int
    head_dim: int


_LLAMA_BLOCK = {"attn_norm": "input_layernorm.weight", "q": "self_attn.q_proj.weight",
                "k": "self_attn.k_proj.weight", "v": "self_attn.v_proj.weight",
                "o": "self_attn.o_proj.weight", "mlp_norm": "post_attention_layernorm.weight",
                "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight",
                "down": "mlp.down_proj.weight"}
_OPTIONAL = frozenset({"attn_norm", "mlp_norm", "gate"})


def _config(source: ModelSource) -> dict:
    path = source.root / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def anatomy(source: ModelSource) -> Anatomy:
    """Find the embedding and every Llama-style block; raise if there is no embedding."""
    embedding = vocab_matrix(source)
    if embedding is None:
        raise TensorguardError(f"{source.root}: no token-embedding matrix; cannot compute a signature")
    prefixes: dict[int, str] = {}
    for name in source.tensors:
        if name.endswith(_LLAMA_BLOCK["q"]) and (index := block_index(name)) is not None:
            prefixes[index] = name[: -len(_LLAMA_BLOCK["q"])]
    blocks = []
    for index in sorted(prefixes):
        names = {key: prefixes[index] + suffix for key, suffix in _LLAMA_BLOCK.items()}
        if any(n not in source.tensors for k, n in names.items() if k not in _OPTIONAL):
            continue
        present = {k: n if n in source.tensors else None for k, n in names.items()}
        blocks.append(BlockNames(index, **present))  # type: ignore[arg-type]  # required ones checked
    cfg = _config(source)
    if not blocks:
        return Anatomy(embedding, (), 0, 0, 0)
    q_rows, k_rows = source.info(blocks[0].q).shape[0], source.info(blocks[0].k).shape[0]
    head_dim = int(cfg.get("head_dim") or 0) or (
        cfg["hidden_size"] // cfg["num_attention_heads"]
        if cfg.get("hidden_size") and cfg.get("num_attention_heads") else DEFAULT_HEAD_DIM)
    if q_rows == k_rows:  # no grouping: the head size does not matter
        head_dim = math.gcd(q_rows, head_dim) or q_rows
    if q_rows % head_dim or k_rows % head_dim:
        raise TensorguardError(f"{source.root}: attention rows {q_rows}/{k_rows} are not whole heads "
                               f"of size {head_dim}; add a config.json with head_dim")
    return Anatomy(embedding, tuple(blocks), q_rows // head_dim, k_rows // head_dim, head_dim)


# ---- tokens: which rows of the embedding, keyed by their strings

def token_strings(source: ModelSource, rows: int) -> list[str | None]:
    """The string of each embedding row from ``tokenizer.json`` beside the model (``None``: special
    or unknown); without a tokenizer, ``#<id>`` keys (comparable only between same-id models)."""
    path = source.root / "tokenizer.json"
    if not path.is_file():
        return [f"#{i}" for i in range(rows)]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data.get("model") or {}
        vocab = model.get("vocab") or {}
        strings: list[str | None] = [None] * rows
        items = (vocab.items() if isinstance(vocab, dict)
                 else ((piece[0], i) for i, piece in enumerate(vocab)))  # Unigram: [piece, score]
        for token, index in items:
            if isinstance(index, int) and 0 <= index < rows:
                strings[index] = str(token)
        for added in data.get("added_tokens") or []:
            index = added.get("id")
            if isinstance(index, int) and 0 <= index < rows:
                strings[index] = None if added.get("special") else str(added.get("content"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as exc:
        raise TensorguardError(f"{path}: unreadable tokenizer ({exc})") from None
    return strings


def _rank(token: str) -> bytes:
    return hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()


def select_tokens(strings: list[str | None], count: int) -> list[int]:
    """Rows of the ``count`` tokens with the smallest string hash (a min-hash sample: models that
    share most token strings share most of the sample, whatever their ids)."""
    ranked = sorted((_rank(s), i) for i, s in enumerate(strings) if s is not None)
    return [i for _, i in ranked[:count]]


# ---- the signature

@dataclass(frozen=True)
class Signature:
    """A model's weight signature (see the module docstring); arrays are standardised float16."""

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
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
            raise TensorguardError(f"{where}: corrupt signature ({exc})") from None
        return cls(tuple(head["tokens"]), embed, int(head["block_tokens"]), tuple(head["block_index"]),
                   blocks, tuple(head["kinds"]), int(head["hidden"]), int(head["vocab"]))


def _standardise(m: torch.Tensor, symmetric: bool) -> np.ndarray:
    """Z-score over the off-diagonal entries (upper triangle if symmetric); diagonal set to 0."""
    m = m.double()
    mask = _mask(m.shape[0], symmetric)
    values = m[torch.from_numpy(mask)]
    z = (m - values.mean()) / values.std().clamp_min(1e-30)
    z.fill_diagonal_(0.0)
    return z.numpy().astype(np.float16)


def _mask(n: int, symmetric: bool) -> np.ndarray:
    return np.triu(np.ones((n, n), dtype=bool), 1) if symmetric else ~np.eye(n, dtype=bool)


def _block_token_count(blocks: int) -> int:
    per_block = max(1, blocks) * len(KINDS) * 2
    room = max(0, BUDGET_BYTES - 2 * EMBED_TOKENS**2) // per_block
    return max(8, min(BLOCK_TOKENS, math.isqrt(room)))


def _norm(source: ModelSource, name: str | None, hidden: int) -> torch.Tensor:
    return source.read(name, torch.float32) if name else torch.ones(hidden)


def _project(source: ModelSource, name: str, x: torch.Tensor) -> torch.Tensor:
    """``x Wᵀ`` for a stored (out, in) matrix W, streamed in row blocks: (k, out)."""
    out = torch.empty(x.shape[0], source.info(name).shape[0])
    for first, rows in source.row_blocks(name, dtype=torch.float32):
        out[:, first:first + rows.shape[0]] = x @ rows.T
    return out


def _read_out(source: ModelSource, name: str, x: torch.Tensor) -> torch.Tensor:
    """``x W`` for a stored (residual, inner) output matrix W, streamed in row blocks: (k, inner)."""
    out = torch.zeros(x.shape[0], source.info(name).shape[1])
    for first, rows in source.row_blocks(name, dtype=torch.float32):
        out += x[:, first:first + rows.shape[0]] @ rows
    return out


def _expand_groups(m: torch.Tensor, kv_heads: int, group: int, head_dim: int) -> torch.Tensor:
    """(k, kv*hd) -> (k, kv*group*hd): each key/value head repeated for its query heads."""
    k = m.shape[0]
    return m.view(k, kv_heads, 1, head_dim).expand(k, kv_heads, group, head_dim).reshape(k, -1)


def _block_matrices(source: ModelSource, b: BlockNames, a: Anatomy, e: torch.Tensor) -> list[np.ndarray]:
    hidden = e.shape[1]
    x_attn = e * _norm(source, b.attn_norm, hidden)
    x_mlp = e * _norm(source, b.mlp_norm, hidden)
    group = a.heads // a.kv_heads
    q = _project(source, b.q, x_attn)
    k = _expand_groups(_project(source, b.k, x_attn), a.kv_heads, group, a.head_dim)
    v = _expand_groups(_project(source, b.v, x_attn), a.kv_heads, group, a.head_dim)
    o = _read_out(source, b.o, e)
    up = _project(source, b.up, x_mlp)
    down = _read_out(source, b.down, e)
    gate = _project(source, b.gate, x_mlp) if b.gate else None
    mats = {"qk": q @ k.T, "ov": o @ v.T, "mlp": down @ up.T,
            "gate": gate @ gate.T if gate is not None else torch.zeros(e.shape[0], e.shape[0])}
    return [_standardise(mats[kind], kind in SYMMETRIC) for kind in KINDS]


def compute_signature(source: ModelSource) -> Signature:
    """The signature of ``source``, streaming one matrix at a time (float32 maths, float16 result)."""
    with torch.no_grad():
        a = anatomy(source)
        rows, hidden = source.info(a.embedding).shape
        picked = select_tokens(token_strings(source, rows), EMBED_TOKENS)
        if len(picked) < 8:
            raise TensorguardError(f"{source.root}: fewer than 8 usable tokens for a signature")
        strings = token_strings(source, rows)
        e = torch.stack([source.read_rows(a.embedding, i, i + 1, torch.float32)[0] for i in picked])
        e = e * torch.rsqrt((e * e).mean(1, keepdim=True).clamp_min(1e-30))  # the norm's view
        k = min(len(picked), _block_token_count(len(a.blocks)))
        blocks = [_block_matrices(source, b, a, e[:k]) for b in a.blocks]
        stacked = (np.stack([np.stack(m) for m in blocks]) if blocks
                   else np.zeros((0, len(KINDS), k, k), dtype=np.float16))
        return Signature(tuple(str(strings[i]) for i in picked), _standardise(e @ e.T, True), k,
                         tuple(b.index for b in a.blocks), stacked, KINDS, hidden, rows)


# ---- comparing two signatures

@dataclass(frozen=True)
class BlockPair:
    block_a: int
    block_b: int
    similarity: float


@dataclass(frozen=True)
class SignatureSimilarity:
    """How alike two signatures are, part by part (Pearson correlations, 1 = identical).

    ``score`` is the mean of the available parts: ``embed`` and, over aligned block pairs, the mean
    of each kind. ``shared_tokens``: tokens both signatures hold.
    """

    score: float
    embed: float | None
    kinds: dict[str, float]
    pairs: tuple[BlockPair, ...]
    shared_tokens: int
    shared_block_tokens: int


def _shared(ta: tuple[str, ...], tb: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    where = {t: i for i, t in enumerate(tb)}
    ia = [i for i, t in enumerate(ta) if t in where]
    return np.asarray(ia, dtype=np.int64), np.asarray([where[ta[i]] for i in ia], dtype=np.int64)


def _vectors(m: np.ndarray, index: np.ndarray, symmetric: bool) -> np.ndarray:
    """Off-diagonal entries over ``index`` as standardised float32 rows (``(..., n)``)."""
    sub = m[..., index[:, None], index[None, :]].astype(np.float32)
    mask = _mask(len(index), symmetric)
    v = sub[..., mask]
    v = v - v.mean(-1, keepdims=True)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def align_blocks(sim: np.ndarray) -> list[tuple[int, int]]:
    """Monotone pairing of every block of the shallower model with a distinct block of the deeper
    one, in order, maximising the summed similarity (dynamic programming)."""
    flip = sim.shape[0] > sim.shape[1]
    s = sim.T if flip else sim
    n, m = s.shape
    best = np.full((n + 1, m + 1), -np.inf)
    best[0, :] = 0.0
    take = np.zeros((n + 1, m + 1), dtype=bool)
    for i in range(1, n + 1):
        for j in range(i, m + 1):
            skip, use = best[i, j - 1], best[i - 1, j - 1] + s[i - 1, j - 1]
            take[i, j] = use >= skip
            best[i, j] = max(skip, use)
    pairs, i, j = [], n, m
    while i > 0:
        if take[i, j]:
            pairs.append((i - 1, j - 1))
            i -= 1
        j -= 1
    pairs.reverse()
    return [(b, a) for a, b in pairs] if flip else pairs


def block_similarity(a: Signature, b: Signature) -> tuple[np.ndarray, int]:
    """(blocks_a, blocks_b, kinds) correlations over the shared block tokens, and their count."""
    ia, ib = _shared(a.tokens[: a.block_tokens], b.tokens[: b.block_tokens])
    if len(ia) < 4 or not len(a.blocks) or not len(b.blocks):
        return np.zeros((len(a.blocks), len(b.blocks), len(KINDS))), len(ia)
    out = np.empty((len(a.blocks), len(b.blocks), len(KINDS)))
    for k, kind in enumerate(KINDS):
        va = _vectors(a.blocks[:, k], ia, kind in SYMMETRIC)
        vb = _vectors(b.blocks[:, k], ib, kind in SYMMETRIC)
        out[:, :, k] = va @ vb.T
    return out, len(ia)


def _kinds_present(sig: Signature) -> list[int]:
    """Kinds with information (``gate`` is all zeros for models without a gated MLP)."""
    return [k for k in range(len(KINDS)) if np.any(sig.blocks[:, k])] if len(sig.blocks) else []


def similarity(a: Signature, b: Signature) -> SignatureSimilarity:
    """Compare two signatures over their shared tokens, blocks aligned in order."""
    ia, ib = _shared(a.tokens, b.tokens)
    embed = None
    if len(ia) >= 8:
        va, vb = _vectors(a.embed, ia, True), _vectors(b.embed, ib, True)
        embed = float(va @ vb)
    sims, shared_block = block_similarity(a, b)
    kinds: dict[str, float] = {}
    pairs: tuple[BlockPair, ...] = ()
    present = sorted(set(_kinds_present(a)) & set(_kinds_present(b)))
    if sims.size and present and shared_block >= 4:
        mean = sims[:, :, present].mean(-1)
        matched = align_blocks(mean)
        pairs = tuple(BlockPair(a.block_index[i], b.block_index[j], float(mean[i, j]))
                      for i, j in matched)
        rows, cols = np.array([p[0] for p in matched]), np.array([p[1] for p in matched])
        kinds = {KINDS[k]: float(sims[rows, cols, k].mean()) for k in present}
    parts = [v for v in (embed, *kinds.values()) if v is not None]
    score = float(np.mean(parts)) if parts else float("nan")
    return SignatureSimilarity(score, embed, kinds, pairs, len(ia), shared_block)


def signature_of(path: str | Path) -> Signature:
    """Open the model at ``path`` and compute its signature."""
    from tensorguard.loading import open_model

    with open_model(path) as source:
        return compute_signature(source)


# ---- the compact retrieval vector (the first, vectorised pass of ``scan``)

#: Tokens of the retrieval vector: the embedding Gram over the first of the signature's tokens.
RETRIEVAL_TOKENS = 64


def triangle(m: np.ndarray) -> np.ndarray:
    """The strict upper triangle of the last two axes, row-major."""
    rows, cols = np.triu_indices(m.shape[-1], 1)
    return m[..., rows, cols]


def unit(v: np.ndarray) -> np.ndarray:
    """Centre and scale the last axis to unit norm: dot products become Pearson correlations."""
    v = v.astype(np.float32) - v.mean(-1, keepdims=True, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def retrieval_vector(sig: Signature) -> tuple[tuple[str, ...], np.ndarray]:
    """Tokens and float16 unit vector of the embedding Gram's upper triangle over them (4 KB)."""
    n = min(RETRIEVAL_TOKENS, len(sig.tokens))
    return sig.tokens[:n], unit(triangle(sig.embed[:n, :n].astype(np.float32))).astype(np.float16)


def untriangle(v: np.ndarray, n: int) -> np.ndarray:
    """A symmetric (…, n, n) matrix (zero diagonal) from its upper triangle."""
    out = np.zeros((*v.shape[:-1], n, n), dtype=np.float32)
    rows, cols = np.triu_indices(n, 1)
    out[..., rows, cols] = v
    out[..., cols, rows] = v
    return out
