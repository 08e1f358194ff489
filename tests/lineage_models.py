"""Tiny Llama-style models shared by the signature/scan tests, and ``tensorguard.testing.disguises`` bound
to their spec."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tensorguard.synthetic import ModelSpec, make_weights, save_model, save_tokenizer
from tensorguard.testing import disguises

SPEC = ModelSpec(scheme="llama", hidden=64, layers=6, intermediate=192, vocab=256, heads=4, kv_heads=2)
Weights = dict[str, torch.Tensor]


def base_weights(seed: int) -> Weights:
    return make_weights(SPEC, seed)


def rename(w: Weights, seed: int) -> Weights:
    return disguises.rename(w, SPEC, seed=seed)


def rescale(w: Weights, seed: int) -> Weights:
    return disguises.rescale(w, SPEC, seed=seed)


def rotate(w: Weights, seed: int) -> Weights:
    return disguises.rotate(w, SPEC, seed=seed)


def forward(w: Weights, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of one token sequence, in float64."""
    return disguises.llama_logits({k: v.double() for k, v in w.items()}, tokens[None], SPEC)[0]


def save(directory: Path, w: Weights, vocab: list[str] | None = None) -> Path:
    """A model directory: weights, ``config.json`` and (optionally) a word-level ``tokenizer.json``."""
    save_model(w, directory)
    config = {"hidden_size": SPEC.hidden, "num_attention_heads": SPEC.heads,
              "num_key_value_heads": SPEC.kv_heads, "head_dim": SPEC.head_dim}
    (directory / "config.json").write_text(json.dumps(config))
    if vocab is not None:
        write_tokenizer(directory, vocab)
    return directory


def write_tokenizer(directory: Path, vocab: list[str]) -> None:
    """A word-level ``tokenizer.json`` in ``directory`` (it serves every model file there)."""
    save_tokenizer(directory, vocab)
