"""Function-preserving disguises of a Llama-style model, and the decoder that proves them.

Whoever re-uploads a model under a new name can rename its hidden units, rescale paired matrices
or rotate its residual basis without changing one output: these are the attacks that the weight
signature and compare's independence test must see through. Each disguise takes a weight dict
with Hugging Face Llama names (``make_weights`` of a ``llama`` spec, or a trained one) and
returns a new dict; ``llama_logits`` runs the decoder (RMSNorm, RoPE, causal GQA attention,
SwiGLU) so that a test or benchmark can check that the logits are unchanged; ``drop_blocks``
(depth pruning) is the one change here that is not function-preserving. Shared, like
``synthetic``, by the tests and the benchmarks; every draw comes from an explicit seed.
"""

from __future__ import annotations

import torch

from tensorguard.synthetic import ModelSpec
from tensorguard.testing.renaming import Renaming

Weights = dict[str, torch.Tensor]
_BLOCK = "model.layers."


def num_blocks(w: Weights) -> int:
    """How many decoder blocks ``w`` holds (blocks are numbered from 0 without gaps)."""
    return 1 + max(int(n.split(".")[2]) for n in w if n.startswith(_BLOCK))


def output_head(w: Weights) -> torch.Tensor:
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
    random orthogonal matrix R (RMSNorm without weights commutes with R). A tied head is untied:
    it becomes the final norm times the embedding, rotated."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(spec.hidden, spec.hidden, generator=gen, dtype=torch.float64))
    rot = (q * torch.sign(torch.diagonal(r))).float()
    out: Weights = {"model.embed_tokens.weight": w["model.embed_tokens.weight"] @ rot}
    for i in range(num_blocks(w)):
        p = f"{_BLOCK}{i}."
        for norm, mats in (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                           ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))):
            g = w[p + f"{norm}.weight"]
            out[p + f"{norm}.weight"] = torch.ones_like(g)
            for m in mats:
                out[p + f"{m}.weight"] = (w[p + f"{m}.weight"] * g) @ rot
        for m in ("self_attn.o_proj", "mlp.down_proj"):
            out[p + f"{m}.weight"] = rot.T @ w[p + f"{m}.weight"]
    out["model.norm.weight"] = torch.ones_like(w["model.norm.weight"])
    out["lm_head.weight"] = (output_head(w) * w["model.norm.weight"]) @ rot
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
