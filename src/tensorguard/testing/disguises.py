"""Disguises of a Llama-style model, and the decoder that proves them.

Whoever re-uploads a model under a new name can rename its hidden units, rescale paired matrices
or rotate its residual basis without changing one output: these are the attacks that the weight
signature and compare's independence test must see through. Others change the function a little
(``slice_residual``, SliceGPT-style; ``quantize_4bit``) or only the token axis
(``shuffle_vocabulary``, ``insert_tokens``, ``swap_tokenizer``, which return the new token strings
with the weights). Each disguise takes a weight dict with Hugging Face Llama names
(``make_weights`` of a ``llama`` spec, or a trained one) and returns a new dict; ``llama_logits``
runs the decoder (RMSNorm, RoPE, causal GQA attention, SwiGLU) so that a test or benchmark can
check that the logits are unchanged; ``drop_blocks`` (depth pruning) is another change that is
not function-preserving. Shared, like ``synthetic``, by the tests and the benchmarks; every draw
comes from an explicit seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from tensorguard.synthetic import ModelSpec
from tensorguard.testing.renaming import Renaming

Weights = dict[str, torch.Tensor]
Map = Callable[[torch.Tensor], torch.Tensor]
_BLOCK = "model.layers."


def num_blocks(w: Mapping[str, torch.Tensor]) -> int:
    """How many decoder blocks ``w`` holds (blocks are numbered from 0 without gaps)."""
    return 1 + max(int(n.split(".")[2]) for n in w if n.startswith(_BLOCK))


def output_head(w: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The output head (the embedding itself when they are tied)."""
    return w.get("lm_head.weight", w["model.embed_tokens.weight"])


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding (Hugging Face's rotate-half layout) of (batch, heads, T, hd)."""
    t, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=x.dtype) / hd)
    angles = torch.outer(torch.arange(t, dtype=x.dtype), inv)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    half = hd // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def _rms(x: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * g


def llama_logits(w: Weights, tokens: torch.Tensor, spec: ModelSpec, *, rope_theta: float = 10000.0,
                 eps: float = 1e-6) -> torch.Tensor:
    """Logits (batch, T, vocab) of ``tokens`` (batch, T), in the dtype of ``w`` (differentiable,
    so it also trains the benchmark corpus); heads and sizes come from ``spec``, the number of
    blocks from ``w``."""
    heads, kv, hd = spec.heads, spec.kv_heads or spec.heads, spec.head_dim
    x = w["model.embed_tokens.weight"][tokens]
    b, t, _ = x.shape
    for i in range(num_blocks(w)):
        p = f"{_BLOCK}{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(b, t, heads, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(b, t, kv, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(b, t, kv, hd).transpose(1, 2)
        q, k = _rope(q, rope_theta), _rope(k, rope_theta)
        k, v = (z.repeat_interleave(heads // kv, dim=1) for z in (k, v))
        att = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + att.transpose(1, 2).reshape(b, t, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return _rms(x, w["model.norm.weight"], eps) @ output_head(w).T


def rename(w: Weights, spec: ModelSpec, *, seed: int) -> Weights:
    """Rename residual dimensions, attention heads (GQA-consistent) and MLP neurons."""
    r = Renaming(spec.hidden, spec.heads, spec.kv_heads or spec.heads, spec.intermediate, seed)
    return {n: r.apply(n, t) for n, t in w.items()}


def rescale(w: Weights, spec: ModelSpec, *, seed: int) -> Weights:
    """Norm weights x s with the next matrices' columns / s; each query head group x c with its
    key head / c (commutes with RoPE); value rows x d with the matching output columns / d; up
    rows x e with down columns / e; the final norm into the head (unless the head is the
    embedding itself). Factors are drawn log-uniformly in [e^-1.5, e^1.5]."""
    gen = torch.Generator().manual_seed(seed)
    heads, kv, hd = spec.heads, spec.kv_heads or spec.heads, spec.head_dim
    group = heads // kv

    def factors(n: int) -> torch.Tensor:
        return torch.exp(torch.empty(n).uniform_(-1.5, 1.5, generator=gen))

    out = dict(w)
    for i in range(num_blocks(w)):
        p = f"{_BLOCK}{i}."
        s = factors(spec.hidden)
        out[p + "input_layernorm.weight"] = w[p + "input_layernorm.weight"] * s
        for x in ("q_proj", "k_proj", "v_proj"):
            out[p + f"self_attn.{x}.weight"] = w[p + f"self_attn.{x}.weight"] / s
        c = factors(kv)
        out[p + "self_attn.q_proj.weight"] = out[p + "self_attn.q_proj.weight"] * \
            c.repeat_interleave(group * hd)[:, None]
        out[p + "self_attn.k_proj.weight"] = out[p + "self_attn.k_proj.weight"] / \
            c.repeat_interleave(hd)[:, None]
        d = factors(kv * hd)
        out[p + "self_attn.v_proj.weight"] = out[p + "self_attn.v_proj.weight"] * d[:, None]
        per_query = d.view(kv, 1, hd).expand(kv, group, hd).reshape(-1)
        out[p + "self_attn.o_proj.weight"] = w[p + "self_attn.o_proj.weight"] / per_query[None, :]
        t = factors(spec.hidden)
        out[p + "post_attention_layernorm.weight"] = w[p + "post_attention_layernorm.weight"] * t
        e = factors(spec.intermediate)
        out[p + "mlp.gate_proj.weight"] = w[p + "mlp.gate_proj.weight"] / t
        out[p + "mlp.up_proj.weight"] = w[p + "mlp.up_proj.weight"] / t * e[:, None]
        out[p + "mlp.down_proj.weight"] = w[p + "mlp.down_proj.weight"] / e[None, :]
    if "lm_head.weight" in w:
        u = factors(spec.hidden)
        out["model.norm.weight"] = w["model.norm.weight"] * u
        out["lm_head.weight"] = w["lm_head.weight"] / u
    return out


def rotate(w: Weights, spec: ModelSpec, *, seed: int) -> Weights:
    """Fold every norm weight into the matrices after it, then rotate the residual basis by a
    random orthogonal matrix R (RMSNorm without weights commutes with R), as QuaRot and SpinQuant
    do. A tied head is untied: it becomes the final norm times the embedding, rotated."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(spec.hidden, spec.hidden, generator=gen, dtype=torch.float64))
    rot = (q * torch.sign(torch.diagonal(r))).float()
    return map_residual(w, lambda x: x @ rot, lambda x: rot.T @ x, spec.hidden)


def hadamard_rotation(hidden: int, *, seed: int) -> tuple[Map, Map]:
    """QuaRot's randomized Hadamard rotation ``R = diag(signs) H / sqrt(hidden)`` (``hidden`` a
    power of two) as the two maps ``map_residual`` takes, ``x -> x R`` and ``x -> R^T x``, each
    a fast Walsh-Hadamard transform: ``O(hidden log hidden)`` a row instead of ``hidden^2``."""
    signs = torch.randint(0, 2, (hidden,), generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0
    return (lambda x: _walsh_hadamard(x.float() * signs),
            lambda x: _walsh_hadamard((signs[:, None] * x.float()).T).T)


def _walsh_hadamard(x: torch.Tensor) -> torch.Tensor:
    """``x H / sqrt(n)`` along the last axis (``n`` a power of two), H the Sylvester Hadamard matrix."""
    n, h = x.shape[-1], 1
    y = x.reshape(-1, n)
    while h < n:
        pairs = y.view(-1, n // (2 * h), 2, h)
        y = torch.stack((pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]), dim=2)
        h *= 2
    out: torch.Tensor = y.reshape(x.shape) / n**0.5
    return out


def slice_residual(w: Weights, spec: ModelSpec, *, remove: float) -> Weights:
    """SliceGPT-style slicing: fold the norms, rotate the residual basis to the principal axes
    of the embedding rows, and keep the leading ``1 - remove`` share of them, cutting every
    matrix that reads or writes the residual stream to match (close to, not exactly, the same
    function: the removed directions carry the least energy; the norms scale by
    ``sqrt(hidden / kept)`` so RMSNorm keeps its gain)."""
    keep = round(spec.hidden * (1.0 - remove))
    emb = w["model.embed_tokens.weight"].double()
    _, vectors = torch.linalg.eigh(emb.T @ emb)  # ascending eigenvalues
    basis = vectors.flip(1)[:, :keep].float()
    out = map_residual(w, lambda x: x @ basis, lambda x: basis.T @ x, keep)
    gain = (spec.hidden / keep) ** 0.5
    return {n: t * gain if n.endswith("layernorm.weight") or n == "model.norm.weight" else t
            for n, t in out.items()}


def map_residual(w: Mapping[str, torch.Tensor], right: Map, left: Map, width: int) -> Weights:
    """The residual stream mapped by a matrix B (hidden x ``width``, orthonormal columns), norms
    folded: ``right(x) = x B`` for matrices that read the stream, ``left(x) = B^T x`` for those
    that write it. ``w`` may be any mapping (one that reads each tensor when asked streams a
    large model through)."""
    out: Weights = {"model.embed_tokens.weight": right(w["model.embed_tokens.weight"])}
    for i in range(num_blocks(w)):
        p = f"{_BLOCK}{i}."
        for norm, mats in (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                           ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))):
            g = w[p + f"{norm}.weight"]
            out[p + f"{norm}.weight"] = torch.ones(width)
            for m in mats:
                out[p + f"{m}.weight"] = right(w[p + f"{m}.weight"] * g)
        for m in ("self_attn.o_proj", "mlp.down_proj"):
            out[p + f"{m}.weight"] = left(w[p + f"{m}.weight"])
    out["model.norm.weight"] = torch.ones(width)
    out["lm_head.weight"] = right(output_head(w) * w["model.norm.weight"])
    return out


def quantize_4bit(w: Weights, group: int = 32) -> Weights:
    """4-bit asymmetric group quantization (min/max per group of ``group`` entries, like Q4_1),
    and back to float: the round trip a 4-bit checkpoint makes."""
    out = {}
    for n, t in w.items():
        if t.ndim == 2:
            g = t.reshape(-1, group)
            lo, hi = g.amin(1, keepdim=True), g.amax(1, keepdim=True)
            step = ((hi - lo) / 15).clamp_min(1e-12)
            t = (((g - lo) / step).round().clamp(0, 15) * step + lo).reshape(t.shape)
        out[n] = t
    return out


def vocabulary(size: int) -> list[str]:
    """Token strings for a model of ``size`` rows, one a row."""
    return [f"tok{i}" for i in range(size)]


def shuffle_vocabulary(w: Weights, tokens: list[str], *, seed: int) -> tuple[Weights, list[str]]:
    """The same tokens in another row order (embedding, head and tokenizer alike)."""
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed)).tolist()
    return _remap(w, order, seed), [tokens[i] for i in order]


def insert_tokens(w: Weights, tokens: list[str], *, count: int, seed: int) -> tuple[Weights, list[str]]:
    """``count`` new tokens (new strings, fresh rows) inserted in the middle of the vocabulary."""
    mid = len(tokens) // 2
    rows: list[int | None] = [*range(mid), *([None] * count), *range(mid, len(tokens))]
    new = [f"new{i}" for i in range(count)]
    return _remap(w, rows, seed), [*tokens[:mid], *new, *tokens[mid:]]


def swap_tokenizer(w: Weights, tokens: list[str], *, share: float, seed: int) -> tuple[Weights, list[str]]:
    """Another tokenizer sharing ``share`` of the strings: the others dropped, as many new ones
    (fresh rows) added, and every row in a new order."""
    gen = torch.Generator().manual_seed(seed)
    kept = sorted(torch.randperm(len(tokens), generator=gen)[:round(share * len(tokens))].tolist())
    rows: list[int | None] = [*kept, *([None] * (len(tokens) - len(kept)))]
    strings = [tokens[i] for i in kept] + [f"other{i}" for i in range(len(tokens) - len(kept))]
    order = torch.randperm(len(rows), generator=gen).tolist()
    return _remap(w, [rows[i] for i in order], seed), [strings[i] for i in order]


def _remap(w: Weights, rows: list[int | None], seed: int) -> Weights:
    """Embedding and head rows in the order ``rows`` (``None``: a fresh row of the same scale)."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(w)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in w:
            t = w[name]
            fresh = t.std() * torch.randn(len(rows), t.shape[1], generator=gen)
            out[name] = torch.stack([t[i] if i is not None else fresh[k] for k, i in enumerate(rows)])
    return out


def drop_blocks(w: Weights, drop: tuple[int, ...]) -> Weights:
    """Depth pruning: remove blocks ``drop`` and renumber the rest (not function-preserving:
    the derivative that compare must align by content, not by index)."""
    keep = [i for i in range(num_blocks(w)) if i not in drop]
    new_index = {old: new for new, old in enumerate(keep)}
    out = {}
    for n, t in w.items():
        parts = n.split(".")
        if n.startswith(_BLOCK):
            old = int(parts[2])
            if old not in new_index:
                continue
            parts[2] = str(new_index[old])
        out[".".join(parts)] = t
    return out
