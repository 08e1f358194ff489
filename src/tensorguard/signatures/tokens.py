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

import hashlib
import heapq
import mmap
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gguf import GGUFValueType, TokenType

from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_json, regular_file
from tensorguard.loading import ModelSource, WeightFormat

#: GGUF token types that are never picked.
_SPECIAL_TYPES = frozenset({TokenType.UNKNOWN, TokenType.CONTROL, TokenType.UNUSED})
_GGUF_SCALARS = {GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.UINT16: 2,
                 GGUFValueType.INT16: 2, GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4,
                 GGUFValueType.FLOAT32: 4, GGUFValueType.BOOL: 1, GGUFValueType.UINT64: 8,
                 GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8}
_U32, _U64, _I32 = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<i")


def token_strings(source: ModelSource, rows: int) -> list[str | None]:
    """The string of each of the embedding's ``rows`` rows (``None``: special, or not in the
    vocabulary); ``#<row>`` keys when the model carries no vocabulary."""
    path = source.root / "tokenizer.json"
    if path.is_file():
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
    Only these arrays are decoded: the loading layer keeps the vocabulary's length alone."""
    with regular_file(path).open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            found = _gguf_arrays(buf, ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"))
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise TensorguardError(f"{path}: unreadable GGUF vocabulary ({exc})") from None
    return [str(t) for t in found.get("tokenizer.ggml.tokens", [])], found.get("tokenizer.ggml.token_type")


def _gguf_vocabulary(path: Path, rows: int) -> list[str | None]:
    tokens, types = read_gguf_vocabulary(path)
    if not tokens:
        return [f"#{i}" for i in range(rows)]
    strings: list[str | None] = [None] * rows
    for i, token in enumerate(tokens[:rows]):
        special = types is not None and i < len(types) and types[i] in _SPECIAL_TYPES
        strings[i] = None if special else str(token)
    return strings


def _gguf_arrays(buf: Any, wanted: tuple[str, ...]) -> dict[str, list[Any]]:
    """The metadata arrays named ``wanted`` (strings and int32 only), walking the key/value section."""
    if buf[:4] != b"GGUF" or _U32.unpack_from(buf, 4)[0] not in (2, 3):
        raise ValueError("not a GGUF file of version 2 or 3")
    pos = 4 + 4 + 8
    (count,) = _U64.unpack_from(buf, pos)
    pos += 8
    found: dict[str, list[Any]] = {}

    def string(at: int) -> tuple[str, int]:
        (length,) = _U64.unpack_from(buf, at)
        end = at + 8 + length
        if end > len(buf):
            raise ValueError("truncated")
        return bytes(buf[at + 8:end]).decode("utf-8"), end

    def skip_value(vtype: int, at: int, keep: Callable[[Any], None] | None) -> int:
        if vtype == GGUFValueType.STRING:
            text, at = string(at)
            if keep:
                keep(text)
            return at
        if vtype in _GGUF_SCALARS:
            if keep and vtype == GGUFValueType.INT32:
                keep(_I32.unpack_from(buf, at)[0])
            return at + _GGUF_SCALARS[GGUFValueType(vtype)]
        if vtype == GGUFValueType.ARRAY:
            item: int = _U32.unpack_from(buf, at)[0]
            n: int = _U64.unpack_from(buf, at + 4)[0]
            at += 12
            if item in _GGUF_SCALARS and not keep:
                return at + n * _GGUF_SCALARS[GGUFValueType(item)]
            for _ in range(n):
                at = skip_value(item, at, keep)
            return at
        raise ValueError(f"unknown metadata value type {vtype}")

    for _ in range(count):
        key, pos = string(pos)
        (vtype,) = _U32.unpack_from(buf, pos)
        values: list[Any] = []
        pos = skip_value(vtype, pos + 4, values.append if key in wanted else None)
        if key in wanted:
            found[key] = values
            if len(found) == len(wanted):
                break
    return found


def _rank(token: str) -> bytes:
    return hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()


def select_tokens(strings: list[str | None], count: int) -> list[int]:
    """Rows of the ``count`` tokens with the smallest string hash (a min-hash sample: models that
    share most token strings share most of the sample, whatever their row order)."""
    first = {s: i for i, s in reversed(list(enumerate(strings))) if s is not None}  # one row a string
    return [i for _, i in heapq.nsmallest(count, ((_rank(s), i) for s, i in first.items()))]
