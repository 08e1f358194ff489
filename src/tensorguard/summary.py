"""``inspect``: a header-only summary of a model (no tensor data is read)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tensorguard.architectures import Role, Space, block_index, lookup, role, vocab_matrix
from tensorguard.loading import ModelInput, ModelSource, opened


@dataclass(frozen=True)
class RoleCount:
    role: str
    tensors: int
    params: int


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


def _hidden_size(source: ModelSource) -> int | None:
    """The residual width, read off the first registered matrix; else the most common dimension."""
    for info in source.matrices():
        located = lookup(info.name)
        if located is not None and Space.RESIDUAL in located.weight.axes:
            return info.shape[located.weight.axes.index(Space.RESIDUAL)]
    dims = Counter(d for i in source.matrices() for d in i.shape)
    return dims.most_common(1)[0][0] if dims else None


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
        path=str(source.root),
        shards=[s.name for s in source.shards],
        dtypes=dict(sorted(dtypes.items())),
        total_params=source.total_params,
        num_tensors=len(source.tensors),
        num_blocks=len(blocks),
        hidden_size=_hidden_size(source),
        vocab_size=source.info(vocab).shape[0] if vocab is not None else None,
        roles=[RoleCount(r.value, tensors[r], params[r]) for r in Role if tensors[r]],
    )


def inspect(model: ModelInput, *, base: ModelInput | None = None,
            name: str | None = None) -> ModelSummary:
    """What a model's headers say about it: layout, files, dtypes, parameters, blocks, sizes and
    tensors per role. Reads no tensor data.

    Example::

        summary = tensorguard.inspect("./Qwen2.5-7B-Instruct")
        print(summary.total_params, summary.hidden_size)
    """
    with opened(model, base=base, name=name) as source:
        return summarize(source)
