"""The lineage evaluation corpus: tiny Llama-style models trained for real, and real derivatives.

Built once into ``benchmarks/.data/lineage/`` (git ignores it: only the code that builds it is committed)
by ``build_corpus()``, which ``benchmarks/lineage.py`` calls:

* **Bases**: same architecture (RoPE, GQA, SwiGLU, RMSNorm, untied head; Hugging Face names),
  each trained from its own seed on its own text found offline on the machine that builds it (licence texts,
  the Python standard library, man pages, Debian changelogs). One pair shares its text and
  differs only in the seed: the hardest independent pair.
* **Derivatives** of every base, made with the real operations (``TRANSFORMS``): fine-tuning on
  other text (short and long), a LoRA trained and merged, int8 and 4-bit group quantization round
  trips, 30% magnitude pruning, removal of two middle blocks, vocabulary extension (new tokens in
  ``tokenizer.json``, new rows, then training), a bf16 cast, the function-preserving attacks
  (renaming of residual dimensions, heads and neurons; rescaling of paired matrices and norm
  weights; an orthogonal rotation of the residual basis after folding the norms), each checked
  to leave the logits unchanged, and a linear merge of two derivatives.
* **File formats** (``build_formats``): each base written as GGUF Q8_0 and Q4_1 (llama.cpp's
  layout, read back by tensorguard's GGUF reader), beside its tokenizer and config.
* **A real model** (``lineage_real.py``, opt-in): SmolLM2-135M-Instruct and derivatives of it
  made by the same transforms (``Arch`` and ``Recipe`` hold what differs).

Every draw comes from an explicit seed and torch runs on one thread, so a rebuild gives the same
models. Each model is a directory with ``model.safetensors`` and ``tokenizer.json``; the corpus
``manifest.json`` lists name, base, transform and path.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from benchmarks.common import build_once
from tensorguard.synthetic import ModelSpec, make_weights
from tensorguard.testing.disguises import (
    drop_blocks,
    llama_logits,
    num_blocks,
    quantize_4bit,
    rename,
    rescale,
    rotate,
)

Weights = dict[str, torch.Tensor]

#: Bump when anything below changes what is built (the cache folder is keyed by it).
CORPUS_VERSION = 1
SEQ = 64
BASE_STEPS = 600
TEXT_BYTES = 1_500_000  # per source, enough for the steps above without many repeats


@dataclass(frozen=True)
class Recipe:
    """How the trained derivatives are made: (steps, learning rate) of each, and the batch size."""

    finetune: tuple[int, float]
    finetune_long: tuple[int, float]
    lora: tuple[int, float]
    vocab_ext: tuple[int, float]
    batch: int


@dataclass(frozen=True)
class Arch:
    """A Llama-style architecture as the forward pass needs it."""

    spec: ModelSpec
    rope_theta: float
    eps: float
    recipe: Recipe


TINY = Arch(ModelSpec(scheme="llama", hidden=64, layers=6, intermediate=192, vocab=1024, heads=4,
                      kv_heads=2), 10000.0, 1e-6,
            Recipe((150, 1e-3), (600, 2e-3), (150, 3e-3), (60, 1e-3), batch=8))
SPEC = TINY.spec


def _python_lib() -> Path:
    return Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"


#: Offline text sources (globs), read in sorted order up to ``TEXT_BYTES``; gzip is decompressed.
TEXT_SOURCES: dict[str, tuple[Callable[[], Path], str]] = {
    "licences": (lambda: Path("/usr/share/common-licenses"), "*"),
    "python": (_python_lib, "*.py"),
    "manpages": (lambda: Path("/usr/share/man/man1"), "*.1.gz"),
    "changelogs": (lambda: Path("/usr/share/doc"), "*/changelog.Debian.gz"),
    "numpy": (lambda: Path(np.__file__).parent, "**/*.py"),
    "copyrights": (lambda: Path("/usr/share/doc"), "*/copyright"),
}


@dataclass(frozen=True)
class Base:
    name: str
    seed: int
    text: str
    tune_text: str  # the different text its fine-tunes are trained on


BASES = (
    Base("base-licences", 0, "licences", "numpy"),
    Base("base-python", 1, "python", "copyrights"),
    Base("base-manpages", 2, "manpages", "numpy"),
    Base("base-changelogs", 3, "changelogs", "copyrights"),
    Base("base-python-seed4", 4, "python", "numpy"),  # same text as base-python, other seed
)


def read_text(source: str) -> str:
    root, pattern = TEXT_SOURCES[source]
    directory = root()
    parts, size = [], 0
    for path in sorted(directory.glob(pattern)):
        if not path.is_file():
            continue
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= TEXT_BYTES:
            break
    if size < 100_000:
        raise RuntimeError(f"text source {source!r} ({directory}/{pattern}) has only {size} bytes")
    return "".join(parts)[:TEXT_BYTES]


# ---- tokenizer: 256 byte tokens plus the most frequent words of all sources (shared vocabulary)

_PRETOKEN = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]|\s+")


def byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


def build_vocab(texts: list[str], size: int) -> list[str]:
    """Byte tokens, then the commonest multi-byte pre-tokens (ties by string): ``size`` strings."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(t for t in _PRETOKEN.findall(text) if len(t.encode()) > 1)
    words = sorted(counts, key=lambda t: (-counts[t], t))[: size - 256]
    return [byte_token(b) for b in range(256)] + words


def encode(text: str, vocab: list[str]) -> np.ndarray:
    index = {t: i for i, t in enumerate(vocab)}
    ids: list[int] = []
    for piece in _PRETOKEN.findall(text):
        if piece in index:
            ids.append(index[piece])
        else:
            ids.extend(piece.encode())
    return np.asarray(ids, dtype=np.int64)


def write_tokenizer(path: Path, vocab: list[str], special: frozenset[int] = frozenset()) -> None:
    """A minimal Hugging Face ``tokenizer.json`` (word-level model with byte fallback tokens);
    the rows ``special`` are special added tokens."""
    data = {"version": "1.0",
            "added_tokens": [{"id": i, "content": vocab[i], "special": True} for i in sorted(special)],
            "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(vocab)},
                      "unk_token": byte_token(0)}}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")


# ---- the model: the functional Llama decoder of ``tensorguard.testing.disguises``

def forward(w: Weights, tokens: torch.Tensor, arch: Arch = TINY) -> torch.Tensor:
    """Logits (batch, T, vocab) of tokens (batch, T)."""
    return llama_logits(w, tokens, arch.spec, rope_theta=arch.rope_theta, eps=arch.eps)


def _batches(ids: np.ndarray, seed: int, batch: int) -> Callable[[], torch.Tensor]:
    gen = np.random.default_rng(seed)
    data = torch.from_numpy(ids)

    def draw() -> torch.Tensor:
        starts = gen.integers(0, len(ids) - SEQ - 1, batch)
        return torch.stack([data[s:s + SEQ + 1] for s in starts])

    return draw


_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def train(w: Weights, ids: np.ndarray, steps: int, lr: float, seed: int, lora_rank: int = 0,
          arch: Arch = TINY) -> Weights:
    """AdamW on next-token loss (cosine schedule); with ``lora_rank`` only LoRA factors train,
    merged into the weights at the end (``W + alpha/r * B A``, alpha = 2r)."""
    torch.manual_seed(seed)
    params = {n: t.detach().clone().float().requires_grad_(lora_rank == 0) for n, t in w.items()}
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if lora_rank:
        for n, t in params.items():
            if any(f".{x}." in n for x in _LORA_TARGETS):
                a = (torch.randn(lora_rank, t.shape[1]) / math.sqrt(t.shape[1])).requires_grad_()
                lora[n] = (a, torch.zeros(t.shape[0], lora_rank, requires_grad=True))
    trainable = [p for pair in lora.values() for p in pair] if lora_rank else list(params.values())
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    draw = _batches(ids, seed, arch.recipe.batch)

    def effective() -> Weights:
        return {n: (t + 2.0 * lora[n][1] @ lora[n][0]) if n in lora else t for n, t in params.items()}

    for _ in range(steps):
        batch = draw()
        logits = forward(effective(), batch[:, :-1], arch)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return {n: t.detach().clone() for n, t in effective().items()}


def loss_on(w: Weights, ids: np.ndarray, seed: int = 123, batches: int = 4, arch: Arch = TINY) -> float:
    draw = _batches(ids, seed, arch.recipe.batch)
    with torch.no_grad():
        losses = []
        for _ in range(batches):
            batch = draw()
            logits = forward(w, batch[:, :-1], arch)
            losses.append(float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))))
    return sum(losses) / len(losses)


# ---- derivatives: real operations on a weight dict

def _is_matrix(name: str, t: torch.Tensor) -> bool:
    return t.ndim == 2


def quantize_int8(w: Weights) -> Weights:
    """Per-row absmax int8 round trip of every matrix."""
    out = {}
    for n, t in w.items():
        if _is_matrix(n, t):
            scale = t.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
            t = (t / scale).round().clamp(-127, 127) * scale
        out[n] = t
    return out


def prune_magnitude(w: Weights, share: float = 0.3) -> Weights:
    """Zero the ``share`` smallest-magnitude entries of every block matrix."""
    out = {}
    for n, t in w.items():
        if _is_matrix(n, t) and n.startswith("model.layers."):
            k = int(share * t.numel())
            cut = t.abs().reshape(-1).kthvalue(k).values
            t = torch.where(t.abs() <= cut, torch.zeros_like(t), t)
        out[n] = t
    return out


def extend_vocab(w: Weights, extra: int, seed: int) -> Weights:
    """Append ``extra`` rows to the embedding and head: their mean plus small noise (as
    ``resize_token_embeddings`` with mean initialisation does)."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(w)
    for n in ("model.embed_tokens.weight", "lm_head.weight") if "lm_head.weight" in w else (
            "model.embed_tokens.weight",):
        t = w[n]
        new = t.mean(0, keepdim=True) + 0.1 * t.std() * torch.randn(extra, t.shape[1], generator=gen)
        out[n] = torch.cat([t, new])
    return out


def relative_change(a: Weights, b: Weights) -> float:
    """``|B - A| / |A|`` over the block matrices (Frobenius norms, summed)."""
    names = [n for n, t in a.items() if t.ndim == 2 and n.startswith("model.layers.")]
    moved = sum(float((b[n] - a[n]).norm()) ** 2 for n in names)
    return (moved / sum(float(a[n].norm()) ** 2 for n in names)) ** 0.5


def merge(a: Weights, b: Weights) -> Weights:
    """Linear merge (average) of two derivatives of one base."""
    return {n: (a[n] + b[n]) / 2 for n in a}


def check_same_function(a: Weights, b: Weights, seed: int, arch: Arch = TINY) -> float:
    """Largest logit difference over a random batch (float64); attacks must keep it tiny."""
    tokens = torch.randint(arch.spec.vocab, (2, 32), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        la = forward({n: t.double() for n, t in a.items()}, tokens, arch)
        lb = forward({n: t.double() for n, t in b.items()}, tokens, arch)
    return float((la - lb).abs().max() / la.abs().max())


# ---- the corpus

@dataclass(frozen=True)
class Entry:
    """One model of the corpus; ``base`` is the base it derives from (itself for a base)."""

    name: str
    base: str
    transform: str  # "base" for a base model
    path: str
    dtype: str = "F32"
    note: str = ""


class Context:
    """What a transform may use: the base's weights, its texts, the vocabulary, other results."""

    def __init__(self, base: Base, weights: Weights, texts: dict[str, np.ndarray], arch: Arch) -> None:
        self.base, self.weights, self.texts, self.arch = base, weights, texts, arch
        self.made: dict[str, Weights] = {}
        self.seed = 100 * (base.seed + 1)

    def tune_ids(self) -> np.ndarray:
        return self.texts[self.base.tune_text]

    def tuned(self, weights: Weights, recipe: tuple[int, float], seed: int, lora_rank: int = 0) -> Weights:
        steps, lr = recipe
        return train(weights, self.tune_ids(), steps, lr, self.seed + seed, lora_rank, self.arch)


def _middle(w: Weights) -> tuple[int, int]:
    n = num_blocks(w)
    return n // 2 - 1, n // 2


Transform = Callable[[Context], Weights]
VOCAB_EXTRA = 128

#: Transform name -> how it is made from the base (``Context``). Order matters only for the
#: transforms made from earlier results (``made``).
TRANSFORMS: dict[str, Transform] = {
    "finetune": lambda c: c.tuned(c.weights, c.arch.recipe.finetune, 1),
    "finetune-long": lambda c: c.tuned(c.weights, c.arch.recipe.finetune_long, 2),
    "lora": lambda c: c.tuned(c.weights, c.arch.recipe.lora, 3, lora_rank=8),
    "int8": lambda c: quantize_int8(c.weights),
    "4bit": lambda c: quantize_4bit(c.weights),
    "prune30": lambda c: prune_magnitude(c.weights, 0.3),
    "drop-blocks": lambda c: drop_blocks(c.weights, _middle(c.weights)),
    "vocab-ext": lambda c: c.tuned(extend_vocab(c.weights, VOCAB_EXTRA, c.seed + 4),
                                   c.arch.recipe.vocab_ext, 5),
    "bf16": lambda c: {n: t.to(torch.bfloat16).float() for n, t in c.weights.items()},
    "permute": lambda c: rename(c.made["finetune"], c.arch.spec, seed=c.seed + 6),
    "rescale": lambda c: rescale(c.made["finetune"], c.arch.spec, seed=c.seed + 7),
    "rotate": lambda c: rotate(c.made["finetune"], c.arch.spec, seed=c.seed + 8),
    "permute-rescale": lambda c: rescale(rename(c.weights, c.arch.spec, seed=c.seed + 9), c.arch.spec,
                                         seed=c.seed + 10),
    "merge": lambda c: merge(c.made["finetune"], c.made["lora"]),
}
#: Transforms that train (their notes say how far the weights moved and what the loss did).
TRAINED = ("finetune", "finetune-long", "lora", "vocab-ext")
#: Attacks whose function must equal the model they were applied to (checked on build).
FUNCTION_PRESERVING = {"permute": "finetune", "rescale": "finetune", "rotate": "finetune",
                       "permute-rescale": None}
_DTYPES = {"bf16": torch.bfloat16}


def make_derivatives(ctx: Context, target: Path, vocab: list[str], special: frozenset[int] = frozenset(),
                     ) -> list[Entry]:
    """Every ``TRANSFORMS`` derivative of ``ctx.base``, saved under ``target`` (functions checked)."""
    entries = []
    for name, make in TRANSFORMS.items():
        _log(f"  {ctx.base.name}: {name}")
        derived = make(ctx)
        ctx.made[name] = derived
        note = ""
        if name in FUNCTION_PRESERVING:
            was = FUNCTION_PRESERVING[name]
            error = check_same_function(ctx.made[was] if was else ctx.weights, derived, ctx.seed, ctx.arch)
            if error > 1e-4:
                raise RuntimeError(f"{ctx.base.name}/{name}: changes the logits (relative {error:.2e})")
            note = f"logits unchanged (max relative difference {error:.1e})"
        if name in TRAINED:
            note = (f"loss on its tuning text {loss_on(ctx.weights, ctx.tune_ids(), arch=ctx.arch):.2f} -> "
                    f"{loss_on(derived, ctx.tune_ids(), arch=ctx.arch):.2f}; block matrices moved by "
                    f"{relative_change(ctx.weights, derived):.0%}")
        model_vocab = _extended_vocab(vocab, VOCAB_EXTRA) if name == "vocab-ext" else vocab
        path = target / f"{ctx.base.name}--{name}"
        save_model_dir(path, derived, model_vocab, ctx.arch, _DTYPES.get(name, torch.float32), special)
        entries.append(Entry(path.name, ctx.base.name, name, str(path),
                             "BF16" if name in _DTYPES else "F32", note))
    return entries


def corpus_dir(workdir: Path) -> Path:
    return workdir / f"lineage-v{CORPUS_VERSION}"


def write_config(directory: Path, w: Weights, arch: Arch) -> None:
    spec = arch.spec
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": spec.hidden,
              "intermediate_size": spec.intermediate, "num_hidden_layers": num_blocks(w),
              "num_attention_heads": spec.heads, "num_key_value_heads": spec.kv_heads,
              "head_dim": spec.head_dim, "vocab_size": w["model.embed_tokens.weight"].shape[0],
              "rope_theta": arch.rope_theta, "rms_norm_eps": arch.eps,
              "tie_word_embeddings": "lm_head.weight" not in w}
    (directory / "config.json").write_text(json.dumps(config, indent=1))


def save_model_dir(directory: Path, w: Weights, vocab: list[str], arch: Arch = TINY,
                   dtype: torch.dtype = torch.float32, special: frozenset[int] = frozenset()) -> None:
    """``model.safetensors``, ``tokenizer.json`` and ``config.json`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({n: t.to(dtype).contiguous() for n, t in w.items()}, str(directory / "model.safetensors"))
    write_tokenizer(directory / "tokenizer.json", vocab, special)
    write_config(directory, w, arch)


def load_weights(directory: Path) -> Weights:
    return {n: t.float() for n, t in load_file(str(directory / "model.safetensors")).items()}


def _extended_vocab(vocab: list[str], extra: int) -> list[str]:
    return vocab + [f"<ext_{i}>" for i in range(extra)]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def texts_for(sources: set[str]) -> dict[str, str]:
    return {s: read_text(s) for s in sorted(sources)}


def _texts() -> tuple[list[str], dict[str, np.ndarray]]:
    sources = sorted({b.text for b in BASES} | {b.tune_text for b in BASES})
    raw = {s: read_text(s) for s in sources}
    vocab = build_vocab([raw[s] for s in sources], SPEC.vocab)
    return vocab, {s: encode(raw[s], vocab) for s in sources}


def _build_base(base: Base, target: Path) -> list[Entry]:
    """Train one base and make its derivatives (one process per base; torch on one thread)."""
    torch.set_num_threads(1)
    vocab, texts = _texts()
    _log(f"training {base.name} ({BASE_STEPS} steps on {base.text}) ...")
    weights = train(make_weights(SPEC, base.seed), texts[base.text], BASE_STEPS, 3e-3, base.seed)
    save_model_dir(target / base.name, weights, vocab)
    note = f"loss {loss_on(weights, texts[base.text]):.2f} on {base.text}"
    entries = [Entry(base.name, base.name, "base", str(target / base.name), note=note)]
    return entries + make_derivatives(Context(base, weights, texts, TINY), target, vocab)


def _build(target: Path, processes: int) -> list[Entry]:
    from multiprocessing import get_context

    target.mkdir(parents=True)
    with get_context("spawn").Pool(processes) as pool:
        per_base = pool.starmap(_build_base, [(b, target) for b in BASES])
    return [e for entries in per_base for e in entries]


def built(target: Path, build: Callable[[Path], list[Entry]]) -> list[Entry]:
    """The entries of the corpus folder ``target``, built once by ``build(folder)`` (see
    ``build_once``) with a ``manifest.json`` of paths relative to it."""

    def write(folder: Path) -> None:
        entries = build(folder)
        manifest = [asdict(e) | {"path": str(Path(e.path).relative_to(folder))} for e in entries]
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))

    build_once(target, write)
    manifest = json.loads((target / "manifest.json").read_text())
    return [Entry(**(m | {"path": str(target / m["path"])})) for m in manifest]


def build_corpus(workdir: Path, processes: int = 2) -> list[Entry]:
    """The corpus, built once."""
    return built(corpus_dir(workdir), lambda folder: _build(folder, processes))


#: GGUF types each base is also written in (hidden 64 and 192 neurons are whole 32-blocks).
GGUF_FORMATS = {"gguf-q8_0": "Q8_0", "gguf-q4_1": "Q4_1"}


def build_formats(workdir: Path, bases: list[Entry]) -> list[Entry]:
    """Each base as GGUF files (once, into ``lineage-formats-v{CORPUS_VERSION}``)."""
    from gguf import GGMLQuantizationType

    from tensorguard.testing.gguf_write import save_gguf

    target = workdir / f"lineage-formats-v{CORPUS_VERSION}"
    entries = []
    for base in bases:
        for transform, qtype in GGUF_FORMATS.items():
            path = target / f"{base.name}--{transform}"
            if not (path / "model.gguf").exists():
                partial = path.with_name(path.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                save_gguf(load_weights(Path(base.path)), partial / "model.gguf", arch="llama",
                          heads=SPEC.heads, kv_heads=SPEC.kv_heads, qtype=GGMLQuantizationType[qtype])
                for extra in ("tokenizer.json", "config.json"):
                    shutil.copy(Path(base.path) / extra, partial / extra)
                partial.rename(path)
            entries.append(Entry(path.name, base.name, transform, str(path), qtype))
    return entries


if __name__ == "__main__":
    for e in build_corpus(Path(__file__).parent / ".data"):
        print(e.name, e.transform, e.note)
