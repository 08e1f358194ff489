"""``tensorguard inspect``: a header-only summary of a model (no tensor data is read)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tensorguard import report
from tensorguard.architecture import Role, block_index, role
from tensorguard.loading import ModelSource


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


def summarize(source: ModelSource) -> ModelSummary:
    """Summarise ``source`` from its tensor headers."""
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
    embeddings = [i for i in source.matrices() if role(i.name) is Role.EMBEDDING]
    if embeddings:
        token_embedding = max(embeddings, key=lambda i: i.shape[0])
        vocab, hidden = token_embedding.shape
    else:
        vocab = None
        hidden = Counter(d for i in source.matrices() for d in i.shape).most_common(1)[0][0]
    return ModelSummary(
        name=source.name,
        layout=source.layout.value,
        path=str(source.root),
        shards=[s.name for s in source.shards],
        dtypes=dict(sorted(dtypes.items())),
        total_params=source.total_params,
        num_tensors=len(source.tensors),
        num_blocks=len(blocks),
        hidden_size=hidden,
        vocab_size=vocab,
        roles=[RoleCount(r.value, tensors[r], params[r]) for r in Role if tensors[r]],
    )


def render_text(s: ModelSummary) -> str:
    shards = s.shards[0] if len(s.shards) == 1 else f"{len(s.shards)} files ({s.shards[0]} ...)"
    lines = [
        f"model        {s.name}",
        f"layout       {s.layout}  ({s.path})",
        f"files        {shards}",
        "dtypes       " + ", ".join(f"{d} ({report.fmt(n)} params)" for d, n in s.dtypes.items()),
        f"parameters   {report.fmt(s.total_params)} in {s.num_tensors} tensors",
        f"blocks       {s.num_blocks}",
        f"hidden size  {report.fmt(s.hidden_size)}",
        f"vocabulary   {report.fmt(s.vocab_size)}",
        "",
        report.table(["role", "tensors", "params"],
                     [[r.role, r.tensors, r.params] for r in s.roles]),
    ]
    return "\n".join(lines)
