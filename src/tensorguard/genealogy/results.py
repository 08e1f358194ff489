"""The family tree as typed results: models, directed edges with their kind and evidence, families."""

from __future__ import annotations

from dataclasses import dataclass

from tensorguard.enums import TextEnum


class EdgeKind(TextEnum):
    """What the child is of its parent, where the weights tell."""

    SAME = "same weights"
    CAST = "cast"
    QUANTIZED = "quantized"
    PRUNED = "pruned"
    RESCALED = "rescaled"
    ADAPTER = "adapter"
    FINETUNED = "fine-tuned"
    MERGE = "merge parent"
    DISGUISED = "disguised"


@dataclass(frozen=True)
class Node:
    """One model and what its weights show on their own."""

    name: str
    params: int
    bits: int  # 32: float32 weights with no artefact; 16: a 16-bit float cast; 8, 4: a quantization grid
    grid: str | None
    zero_share: float
    kurtosis: float


@dataclass(frozen=True)
class Edge:
    """``parent`` -> ``child``. ``directed`` is False where the weights cannot tell which end is the
    parent (the edge is then drawn as the tree's root placed it, and says so)."""

    parent: str
    child: str
    kind: EdgeKind
    similarity: float  # median cosine of the two models' sampled matrices
    directed: bool
    direction: float  # the deciding cue's vote for this orientation, in [-1, 1]
    cue: str | None  # the cue that told the direction
    confidence: float  # that the edge exists: 0 at the related threshold, 1 for identical weights
    evidence: str


@dataclass(frozen=True)
class Family:
    """One tree of the forest: its root, whether the weights single it out, and its members."""

    root: str
    root_told: bool
    members: tuple[str, ...]


@dataclass(frozen=True)
class Tree:
    """The forest over a set of models: roots are the independent bases (or the oldest model seen
    of each family), edges go parent -> child."""

    models: tuple[Node, ...]
    families: tuple[Family, ...]
    edges: tuple[Edge, ...]
    related: float  # the similarity threshold of an edge

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(f.root for f in self.families)

    def parents(self, child: str) -> tuple[str, ...]:
        return tuple(e.parent for e in self.edges if e.child == child)

    def children(self, parent: str) -> tuple[str, ...]:
        return tuple(e.child for e in self.edges if e.parent == parent)
