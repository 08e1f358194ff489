"""Families the sketches split apart: a copy whose hidden units were renamed or whose residual basis
was rotated shares no matrix entry with its original, so it stands as a root of its own.

Where the sketches leave several roots, each root's weight signature (``signatures``: what
renaming, rescaling and rotation leave recognisable, the one ``scan`` matches on) is compared with
the other roots'. Two roots that match (``SIGNATURE_THRESHOLD``, as ``scan``) are one lineage: the
smaller family (ties: the later one) hangs from the member of the other whose signature matches
its root best (joins into the largest family first, so that two disguised copies of one model
hang from it rather than from each other), by a ``disguised`` edge that no cue orients (a
function-preserving change has no direction in the weights). Only roots are read again, and the
members of a family a root matched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tensorguard.catalogue import SIGNATURE_THRESHOLD
from tensorguard.errors import TensorguardError
from tensorguard.genealogy.results import Edge, EdgeKind, Tree
from tensorguard.loading import ModelInput
from tensorguard.signatures import Comparer, compute_signature

#: Digits of a signature score that count when choosing the member a disguised copy hangs from
#: (copies of one function score alike to within noise; the shallowest of them is chosen).
_DIGITS = 3


def relink(t: Tree, models: Sequence[ModelInput]) -> Tree:
    """``t`` with the families whose roots' signatures match joined by ``disguised`` edges."""
    if len(t.families) < 2:
        return t
    source = {node.name: model for node, model in zip(t.models, models, strict=True)}
    signatures: dict[str, Comparer | None] = {}

    def signature(name: str) -> Comparer | None:
        """``name``'s signature, as a ``Comparer``: its vectors are computed once, however many
        other models it is compared with."""
        if name not in signatures:
            try:
                signatures[name] = Comparer(compute_signature(source[name]))
            except TensorguardError:  # an architecture or vocabulary a signature cannot read
                signatures[name] = None
        return signatures[name]

    scores: dict[tuple[str, str], float] = {}

    def score(a: str, b: str) -> float:
        if (a, b) not in scores:
            sa, sb = signature(a), signature(b)
            scores[a, b] = sa.similarity(sb).score if sa is not None and sb is not None else float("nan")
        return scores[a, b]

    def depth(name: str) -> int:
        """Edges above ``name`` (following first parents)."""
        parents = {e.child: e.parent for e in reversed(edges)}
        steps = 0
        while name in parents and steps <= len(parents):
            name, steps = parents[name], steps + 1
        return steps

    families = list(t.families)
    edges = list(t.edges)
    joined = True
    while joined:  # one join at a time, into the largest family first, until no two roots match
        joined = False
        pairs = [(score(f.root, g.root), i, j) for i, f in enumerate(families)
                 for j, g in enumerate(families) if i < j]
        size = [len(f.members) for f in families]
        matched = sorted((p for p in pairs if p[0] >= SIGNATURE_THRESHOLD),
                         key=lambda p: (-max(size[p[1]], size[p[2]]), -p[0], p[1], p[2]))
        if matched:
            _, i, j = matched[0]
            big, small = (i, j) if len(families[i].members) >= len(families[j].members) else (j, i)
            host, guest = families[big], families[small]
            best = max(host.members, key=lambda m: (round(score(m, guest.root), _DIGITS), -depth(m),
                                                    -host.members.index(m)))
            edges.append(Edge(best, guest.root, EdgeKind.DISGUISED, round(score(best, guest.root), 6),
                              False, 0.0, None, 1.0,
                              "renamed, rescaled or rotated weights: matched by the weight signature "
                              "(similarity is the signature's score)"))
            families[big] = dataclasses.replace(host, members=host.members + guest.members)
            del families[small]
            joined = True
    order = {n.name: i for i, n in enumerate(t.models)}
    edges.sort(key=lambda e: (order[e.child], order[e.parent]))
    return dataclasses.replace(t, families=tuple(families), edges=tuple(edges))

