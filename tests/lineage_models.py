"""Tiny Llama-style models and function-preserving disguises shared by the signature/scan tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from tensorguard.architectures.renaming import Renaming
from tensorguard.synthetic import ModelSpec, make_weights, save_model

SPEC = ModelSpec(scheme="llama", hidden=64, layers=6, intermediate=192, vocab=256, heads=4, kv_heads=2)
Weights = dict[str, torch.Tensor]


def base_weights(seed: int) -> Weights:
    return make_weights(SPEC, seed)


def rename(w: Weights, seed: int) -> Weights:
    r = Renaming(SPEC.hidden, SPEC.heads, SPEC.kv_heads or SPEC.heads, SPEC.intermediate, seed)
    return {n: r.apply(n, t) for n, t in w.items()}


def _factors(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.exp(torch.empty(n).uniform_(-1.5, 1.5, generator=gen))


def rescale(w: Weights, seed: int) -> Weights:
    """Norm weights x s (next matrices' columns / s), query group x c (key head / c), value rows
    x d (output columns / d), up rows x e (down columns / e)."""
    gen = torch.Generator().manual_seed(seed)
    kv, hd = SPEC.kv_heads or SPEC.heads, SPEC.head_dim
    group = SPEC.heads // kv
    out = dict(w)
    for i in range(SPEC.layers):
        p = f"model.layers.{i}."
        s = _factors(SPEC.hidden, gen)
        out[p + "input_layernorm.weight"] = w[p + "input_layernorm.weight"] * s
        c = _factors(kv, gen)
        d = _factors(kv * hd, gen)
        out[p + "self_attn.q_proj.weight"] = w[p + "self_attn.q_proj.weight"] / s * \
            c.repeat_interleave(group * hd)[:, None]
        out[p + "self_attn.k_proj.weight"] = w[p + "self_attn.k_proj.weight"] / s / \
            c.repeat_interleave(hd)[:, None]
        out[p + "self_attn.v_proj.weight"] = w[p + "self_attn.v_proj.weight"] / s * d[:, None]
        per_query = d.view(kv, 1, hd).expand(kv, group, hd).reshape(-1)
        out[p + "self_attn.o_proj.weight"] = w[p + "self_attn.o_proj.weight"] / per_query
        t, e = _factors(SPEC.hidden, gen), _factors(SPEC.intermediate, gen)
        out[p + "post_attention_layernorm.weight"] = w[p + "post_attention_layernorm.weight"] * t
        out[p + "mlp.gate_proj.weight"] = w[p + "mlp.gate_proj.weight"] / t
        out[p + "mlp.up_proj.weight"] = w[p + "mlp.up_proj.weight"] / t * e[:, None]
        out[p + "mlp.down_proj.weight"] = w[p + "mlp.down_proj.weight"] / e
    return out


def rotate(w: Weights, seed: int) -> Weights:
    """Fold the norm weights into the matrices after them, then rotate the residual basis."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(SPEC.hidden, SPEC.hidden, generator=gen, dtype=torch.float64))
    rot = (q * torch.sign(torch.diagonal(r))).float()
    out: Weights = {"model.embed_tokens.weight": w["model.embed_tokens.weight"] @ rot}
    for i in range(SPEC.layers):
        p = f"model.layers.{i}."
        for norm, mats in (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                           ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))):
            g = w[p + f"{norm}.weight"]
            out[p + f"{norm}.weight"] = torch.ones_like(g)
            for m in mats:
                out[p + f"{m}.weight"] = (w[p + f"{m}.weight"] * g) @ rot
        for m in ("self_attn.o_proj", "mlp.down_proj"):
            out[p + f"{m}.weight"] = rot.T @ w[p + f"{m}.weight"]
    out["model.norm.weight"] = torch.ones_like(w["model.norm.weight"])
    out["lm_head.weight"] = (w["lm_head.weight"] * w["model.norm.weight"]) @ rot
    return out


def forward(w: Weights, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of the decoder (RMSNorm, RoPE, causal GQA attention, SwiGLU) in float64."""
    w = {k: v.double() for k, v in w.items()}
    heads, kv, hd = SPEC.heads, SPEC.kv_heads or SPEC.heads, SPEC.head_dim
    t = len(tokens)
    inv = 1.0 / 10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.outer(torch.arange(t, dtype=torch.float64), inv)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(x: torch.Tensor) -> torch.Tensor:
        return x * cos + torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1) * sin

    def rms(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * g

    x = w["model.embed_tokens.weight"][tokens]
    mask = torch.full((t, t), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(SPEC.layers):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).view(t, heads, hd).transpose(0, 1))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).view(t, kv, hd).transpose(0, 1))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(t, kv, hd).transpose(0, 1)
        k, v = (z.repeat_interleave(heads // kv, dim=0) for z in (k, v))
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1) @ v
        x = x + att.transpose(0, 1).reshape(t, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def save(directory: Path, w: Weights, vocab: list[str] | None = None) -> Path:
    """A model directory: weights, ``config.json`` and (optionally) a word-level ``tokenizer.json``."""
    save_model(w, directory)
    config = {"hidden_size": SPEC.hidden, "num_attention_heads": SPEC.heads,
              "num_key_value_heads": SPEC.kv_heads, "head_dim": SPEC.head_dim}
    (directory / "config.json").write_text(json.dumps(config))
    if vocab is not None:
        tokenizer = {"model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(vocab)}},
                     "added_tokens": []}
        (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    return directory
