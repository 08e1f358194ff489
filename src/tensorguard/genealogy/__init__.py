"""Family trees over a set of models: who was derived from whom, in which direction, and how.

``tree(models)`` reads each model once (``profiles``: a sketch of every matrix and its artefacts),
finds related pairs and merges from the sketches (``candidates``), orients each pair from what a
derivative gains (``direction``), names each edge (``kinds``) and builds the rooted forest
(``forest``), and joins families whose roots are disguised copies of one another (``disguised``);
``results`` holds the typed result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tensorguard.errors import UsageError
from tensorguard.genealogy.disguised import relink
from tensorguard.genealogy.forest import build_forest
from tensorguard.genealogy.profiles import ModelProfile, profile
from tensorguard.genealogy.results import Edge, EdgeKind, Family, Node, Tree
from tensorguard.loading import ModelInput, ModelSource

__all__ = ["Edge", "EdgeKind", "Family", "ModelProfile", "Node", "Tree", "profile", "tree"]


def tree(models: Sequence[ModelInput], *, names: Sequence[str | None] | None = None) -> Tree:
    """The family tree of ``models`` (paths or open ``ModelSource``s), each read once.

    ``names``: what each model is called in the result (``None`` or left out: its folder or file
    name, or the path as given where two would share a name).
    """
    if len(models) < 2:
        raise UsageError("a family tree needs at least two models", "models")
    if names is not None and len(names) != len(models):
        raise UsageError("{names} must name every model, in order", "names")
    given = list(names) if names is not None else [None] * len(models)
    profiles = [profile(m, name=n if n is not None or not isinstance(m, ModelSource) else m.name)
                for m, n in zip(models, given, strict=True)]
    counts = Counter(p.name for p in profiles)
    if any(c > 1 for c in counts.values()):
        profiles = [ModelProfile(str(m), p.params, p.matrices) if counts[p.name] > 1 and n is None else p
                    for m, n, p in zip(models, given, profiles, strict=True)]
        twice = [name for name, c in Counter(p.name for p in profiles).items() if c > 1]
        if twice:
            raise UsageError(f"two models are named {twice[0]!r}", "models")
    return relink(build_forest(profiles), models)
