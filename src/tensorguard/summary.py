"""``inspect``: a header-only summary of a model (no tensor data is read)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tensorguard.architectures import Role, Slot, Space, block_index, lookup, role, vocab_matrix
from tensorguard.loading import GgufClaims, ModelInput, ModelSource, opened


@dataclass(frozen=True)
class RoleCount:
    role: str
    tensors: int
    params: int


@dataclass(frozen=True)
class QuantizedRole:
    """The quantized weights of one role stored in one scheme (``Q4_K``, ``gptq-int4``, ``nf4``...)."""

    role: str
    scheme: str
    tensors: int
    params: int
    bits_per_weight: float  # every stored bit (codes, scales, zeros) per weight, over these tensors
    group_size: int | None  # weights sharing one scale (None: one scale per tensor)


@dataclass(frozen=True)
class ModelSummary:
    """What the headers of a model say about it."""

    name: str
    layout: str
    path: str
    shards: list[str]
    dtypes: dict[str, int]  # dtype -> parameters stored in it
    total_params: int
    num_tensors: int
    num_blocks: int
    hidden_size: int | None
    vocab_size: int | None
    roles: list[RoleCount] = field(default_factory=list)
    format: str = "safetensors"
    tied_embeddings: bool | None = None  # an embedding and no separate output head
    quantization: list[QuantizedRole] = field(default_factory=list)
    claims: GgufClaims | None = None  # what the file's own metadata says, not checked


def _hidden_size(source: ModelSource) -> int | None:
    """The residual width, read off the first registered matrix; else the most common dimension."""
    for info in source.matrices():
        located = lookup(info.name)
        if located is not None and Space.RESIDUAL in located.weight.axes:
            return info.shape[located.weight.axes.index(Space.RESIDUAL)]
    dims = Counter(d for i in source.matrices() for d in i.shape)
    return dims.most_common(1)[0][0] if dims else None


def _tied(source: ModelSource) -> bool | None:
    """True when the model has a token embedding and no output head although its scheme has one."""
    slots = {loc.slot: loc.scheme for name in source.tensors if (loc := lookup(name)) is not None}
    if Slot.EMBED not in slots:
        return None
    if Slot.LM_HEAD in slots:
        return False
    scheme = slots[Slot.EMBED]
    return True if any(w.slot is Slot.LM_HEAD for w in scheme.weights()) else None


def _quantization(source: ModelSource) -> list[QuantizedRole]:
    groups: dict[tuple[str, str, int | None], list[tuple[int, float]]] = {}
    for info in source:
        if info.quant is not None:
            key = (role(info.name).value, info.quant.scheme, info.quant.group_size)
            groups.setdefault(key, []).append((info.numel, info.quant.bits_per_weight))
    out = []
    for (r, scheme, group), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        params = sum(n for n, _ in members)
        bits = sum(n * b for n, b in members) / params if params else 0.0
        out.append(QuantizedRole(r, scheme, len(members), params, round(bits, 4), group))
    return out


def summarize(source: ModelSource) -> ModelSummary:
    """Summarise an opened ``source`` from its tensor headers."""
    dtypes: Counter[str] = Counter()
    tensors: Counter[Role] = Counter()
    params: Counter[Role] = Counter()
    blocks: set[int] = set()
    for info in source:
        r = role(info.name)
        dtypes[info.dtype] += info.numel
        tensors[r] += 1
        params[r] += info.numel
        if (b := block_index(info.name)) is not None:
            blocks.add(b)
    vocab = vocab_matrix({i.name: i.shape for i in source.matrices()})
    return ModelSummary(
        name=source.name,
        layout=source.layout.value,
        path=source.origin or str(source.root),
        shards=[s.name for s in source.shards],
        dtypes=dict(sorted(dtypes.items())),
        total_params=source.total_params,
        num_tensors=len(source.tensors),
        num_blocks=len(blocks),
        hidden_size=_hidden_size(source),
        vocab_size=source.info(vocab).shape[0] if vocab is not None else None,
        roles=[RoleCount(r.value, tensors[r], params[r]) for r in Role if tensors[r]],
        format=source.format.value,
        tied_embeddings=_tied(source),
        quantization=_quantization(source),
        claims=source.claims,
    )


def inspect(model: ModelInput, *, base: ModelInput | None = None,
            name: str | None = None) -> ModelSummary:
    """What a model's headers say about it: format, layout, files, dtypes, parameters, blocks,
    sizes, tensors per role, quantization per role and, for GGUF, what the file's metadata claims.
    Reads no tensor data.

    Example::

        summary = tensorguard.inspect("./Qwen2.5-7B-Instruct")
        print(summary.total_params, summary.hidden_size)
    """
    with opened(model, base=base, name=name) as source:
        return summarize(source)
