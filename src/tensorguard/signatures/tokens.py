"""Which embedding rows a signature reads, keyed by their token strings.

A token's string is its identity across models: two checkpoints of one tokenizer (or one extended
with new tokens) agree on it whatever the row order. Strings come from ``tokenizer.json`` beside
the model, else from a GGUF file's own vocabulary (``tokenizer.ggml.tokens``: the same strings
as the Hugging Face tokenizer it was converted from); without either, ``#<row>`` keys stand in,
comparable only between models that keep the row order. Special and control tokens are never
picked (they are often untrained).

The sample is a min-hash: the tokens with the smallest hash of their string, so models that share
most of their vocabulary share most of their sample.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
from pathlib import Path

from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_json, regular_file
from tensorguard.loading import ModelSource, WeightFormat, bytesource

_VOCABULARY = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"})


def token_strings(source: ModelSource, rows: int) -> list[str | None]:
    """The string of each of the embedding's ``rows`` rows (``None``: special, or not in the
    vocabulary); ``#<row>`` keys when the model carries no vocabulary."""
    path = source.root / "tokenizer.json"
    if path.is_file():
        bytesource.need_all(path)
        return _tokenizer_json(path, rows)
    if source.format is WeightFormat.GGUF:
        return _gguf_vocabulary(source.shards[0], rows)
    return [f"#{i}" for i in range(rows)]


def _tokenizer_json(path: Path, rows: int) -> list[str | None]:
    data = read_json(path, what="a tokenizer")
    strings: list[str | None] = [None] * rows
    try:
        vocab = data["model"]["vocab"]
        items = (vocab.items() if isinstance(vocab, dict)
                 else ((piece[0], i) for i, piece in enumerate(vocab)))  # Unigram: [piece, score]
        for token, index in items:
            if isinstance(index, int) and 0 <= index < rows:
                strings[index] = str(token)
        for added in data.get("added_tokens") or []:
            index = added.get("id")
            if isinstance(index, int) and 0 <= index < rows:
                strings[index] = None if added.get("special") else str(added.get("content"))
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise TensorguardError(f"{path}: not a tokenizer (no model vocabulary: {exc!r})") from None
    return strings


def read_gguf_vocabulary(path: Path) -> tuple[list[str], list[int] | None]:
    """A GGUF file's token strings and token types (``tokenizer.ggml.*``; empty if it has none).
    Only these long arrays are decoded: the loading layer keeps the vocabulary's length alone."""
    from tensorguard.loading.gguf_file import metadata_value, read_gguf_header

    metadata = read_gguf_header(regular_file(path), keep=_VOCABULARY).metadata
    tokens = metadata_value(metadata, "tokenizer.ggml.tokens", tuple, path, items=str)
    types = metadata_value(metadata, "tokenizer.ggml.token_type", tuple, path, items=int)
    return list(tokens or ()), list(types) if types is not None else None


def _gguf_vocabulary(path: Path, rows: int) -> list[str | None]:
    from gguf import TokenType  # only for GGUF models: reading safetensors never imports gguf

    never = {TokenType.UNKNOWN, TokenType.CONTROL, TokenType.UNUSED}  # special tokens: not picked
    tokens, types = read_gguf_vocabulary(path)
    if not tokens:
        return [f"#{i}" for i in range(rows)]
    strings: list[str | None] = [None] * rows
    for i, token in enumerate(tokens[:rows]):
        special = types is not None and i < len(types) and types[i] in never
        strings[i] = None if special else str(token)
    return strings


def _rank(token: str) -> bytes:
    return hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()


def select_tokens(strings: list[str | None], count: int) -> list[int]:
    """Rows of the ``count`` tokens with the smallest string hash (a min-hash sample: models that
    share most token strings share most of the sample, whatever their row order)."""
    return list(_select(tuple(strings), count))


@functools.lru_cache(maxsize=2)
def _select(strings: tuple[str | None, ...], count: int) -> tuple[int, ...]:
    """``select_tokens``, kept for the last vocabularies: models of one tokenizer (a family's
    checkpoints, compared one after another) hash its strings once."""
    first = {s: i for i, s in reversed(list(enumerate(strings))) if s is not None}  # one row a string
    return tuple(i for _, i in heapq.nsmallest(count, ((_rank(s), i) for s, i in first.items())))
