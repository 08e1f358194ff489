"""The token sequences the forward metric runs: written by the model itself, from a seed.

Each sequence starts at a token drawn from the vocabulary with a seeded generator, and the model
continues it by sampling its own next-token distribution (temperature 1, the same generator), so
the activations are those of text the model finds likely, with no download and no tokenizer. The
same model, seed and ``torch`` build give the same tokens.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

#: Tokens per sequence (enough for the sequence-axis frequency bands: 33 rfft bins).
LENGTH = 64


def generate(model: Any, *, count: int, length: int, seed: int = 0) -> torch.Tensor:
    """``count`` sequences of ``length`` tokens (``count x length``, int64) sampled from ``model``."""
    gen = torch.Generator().manual_seed(seed)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    tokens = torch.randint(0, vocab, (count, 1), generator=gen)
    # transformers 5.25 renamed the key-value cache ``cache`` (``past_key_values`` before)
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache = None
    step = tokens
    with torch.inference_mode():
        while tokens.shape[1] < length:
            out = model(input_ids=step, use_cache=True, **{key: cache})
            cache = getattr(out, key)
            probs = out.logits[:, -1, :vocab].double().softmax(dim=-1)
            step = torch.multinomial(probs, 1, generator=gen)
            tokens = torch.cat([tokens, step], dim=1)
    return tokens
