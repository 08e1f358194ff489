"""The forest: a minimum spanning arborescence over related pairs, each family rooted where the
weights say, and merges given both parents.

1. Candidate edges: every related pair (``RELATED``), both ways. A merge has no edge to its parents
   (step 3) nor to any model farther from it than ``DERIVATIVE_REACH`` times the nearer parent's
   distance, and no edge into it: its own tree (its derivatives) is rooted at it, and it never
   becomes the hub of its parents' family.
2. Each connected set of candidates gets its minimum spanning arborescence (Chu-Liu/Edmonds) under
   the cost ``d + PENALTY * max(0, -s)``: ``d = 1 - similarity``, ``s`` the direction cue's vote
   for that way round. An edge against the cues costs more, so a quantized or cast copy is never
   the parent of the float model it sits beside, even when it happens to sit a hair closer to
   their own parent; an edge the cues cannot orient costs the same both ways. A parent below full
   precision costs ``COARSE_PARENT`` more (a tie-break: a quantizer starts from the float release,
   not from its 16-bit cast, when both fit alike). A parent on a quantization grid costs ``PENALTY``
   more (one full vote against) when its child is no coarser: quantizing onto the parent's own grid
   reproduces the parent, so two same-grid copies of one float model (an int4 round trip and a
   GGUF Q4_1 file, say) sit closer to each other than to it, yet each was made from the float
   model; and a derivative keeps the artefacts of its parent. Where a child's difference from one
   candidate parent is exactly low rank (a merged adapter, to within float rounding), every other
   edge into it costs ``PENALTY`` more: no other parent leaves an exact low rank by chance, while
   siblings trained on the same text may sit closer to it. The arborescence's root is the family's root;
   it is ``told`` when a cue orients an edge out of it (or it stands alone).
3. A merge gets one ``merge parent`` edge from each parent; a family is the trees joined so (with
   unrelated parents it has two roots).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import networkx as nx
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from tensorguard.genealogy.artefacts import FULL
from tensorguard.genealogy.candidates import RELATED, MergeFit, find_merges, products, similarity_matrix
from tensorguard.genealogy.direction import DECISIVE, Direction, direction
from tensorguard.genealogy.kinds import edge_kind, exactly_low_rank
from tensorguard.genealogy.profiles import ModelProfile
from tensorguard.genealogy.results import Edge, EdgeKind, Family, Node, Tree

_DIGITS = 6
#: How close to a merge, relative to its nearer parent, a model must be to hang from it.
DERIVATIVE_REACH = 0.5
#: Extra cost (in units of ``1 - similarity``), per unit of the cues' vote against it, of an
#: edge that runs against the cues.
PENALTY = 0.05
#: Extra cost of a parent with fewer bits than a float32 one (at 0 bits; in proportion).
COARSE_PARENT = 1e-4
_MERGE = Direction(1.0, "merge", {})


def _candidates(sim: np.ndarray, merges: dict[int, MergeFit]) -> np.ndarray:
    """The related pairs an edge may join (symmetric; step 1 of the module's rule)."""
    n = len(sim)
    allowed = (np.nan_to_num(sim, nan=-1.0) >= RELATED) & ~np.eye(n, dtype=bool)
    for child, fit in merges.items():
        reach = DERIVATIVE_REACH * min(1 - sim[child, p] for p in fit.parents)
        for other in range(n):
            if other in fit.parents or 1 - sim[child, other] >= reach:
                allowed[child, other] = allowed[other, child] = False
    return np.asarray(allowed, dtype=bool)


def _adapter_parents(child: int, members: list[int], profiles: Sequence[ModelProfile], allowed: np.ndarray,
                     sim: np.ndarray, exact: dict[tuple[int, int], bool]) -> set[int]:
    """The candidate parents from which ``child`` differs by exactly low rank; only those within
    ``PENALTY`` of its nearest candidate are tried (a farther one could not win the edge). ``exact``
    keeps each pair's answer (it is symmetric), asked again with the ends swapped."""
    near = [u for u in members if allowed[u, child]]
    if len(near) < 2:
        return set()
    best = min(1 - float(sim[u, child]) for u in near)
    near = [u for u in near if 1 - float(sim[u, child]) <= best + PENALTY]
    if len(near) < 2:
        return set()
    for u in near:
        pair = (min(u, child), max(u, child))
        if pair not in exact:
            exact[pair] = exactly_low_rank(profiles[pair[0]], profiles[pair[1]])
    return {u for u in near if exact[min(u, child), max(u, child)]}


def _arborescence(members: list[int], profiles: Sequence[ModelProfile], allowed: np.ndarray, sim: np.ndarray,
                  merges: dict[int, MergeFit], told: Callable[[int, int], Direction],
                  ) -> tuple[int, list[tuple[int, int]]]:
    """The root and the (parent, child) edges of one connected set of candidates."""
    if len(members) == 1:
        return members[0], []
    exact: dict[tuple[int, int], bool] = {}
    adapted = {v: _adapter_parents(v, members, profiles, allowed, sim, exact) for v in members}
    graph = nx.DiGraph()
    graph.add_nodes_from(members)
    for u in members:
        for v in members:
            if allowed[u, v] and v not in merges:
                d = max(0.0, 1 - float(sim[u, v])) + 1e-9
                coarse = COARSE_PARENT * max(0, FULL - profiles[u].bits) / FULL
                if profiles[u].grid is not None and profiles[v].bits >= profiles[u].bits:
                    coarse += PENALTY
                if adapted[v] and u not in adapted[v]:
                    coarse += PENALTY
                graph.add_edge(u, v, weight=d + PENALTY * max(0.0, -told(u, v).score) + coarse)
    tree = nx.minimum_spanning_arborescence(graph, attr="weight", preserve_attrs=False)
    edges = sorted((int(u), int(v)) for u, v in tree.edges)
    children = {v for _, v in edges}
    return next(m for m in members if m not in children), edges


def build_forest(profiles: Sequence[ModelProfile]) -> Tree:
    """The forest over ``profiles`` (names must be distinct)."""
    found = products(profiles)
    sim = similarity_matrix(found)
    merges = find_merges(found, sim)
    allowed = _candidates(sim, merges)
    cues: dict[tuple[int, int], Direction] = {}

    def told(parent: int, child: int) -> Direction:
        """The cues' verdict on ``parent`` -> ``child`` (score > 0: this way round)."""
        if (parent, child) not in cues:
            cues[parent, child] = direction(profiles[parent], profiles[child])
        return cues[parent, child]

    _, parts = connected_components(csr_matrix(allowed.astype(float)), directed=False)
    links = [(p, c) for c, fit in merges.items() for p in fit.parents]
    joined = allowed.astype(float)
    for p, c in links:
        joined[p, c] = joined[c, p] = 1.0
    _, family_of = connected_components(csr_matrix(joined), directed=False)
    edges: list[Edge] = []
    roots: dict[int, list[tuple[int, bool]]] = {}
    for part in sorted(set(parts.tolist()), key=lambda lab: int(np.flatnonzero(parts == lab)[0])):
        members = [int(i) for i in np.flatnonzero(parts == part)]
        root, local = _arborescence(members, profiles, allowed, sim, merges, told)
        edges += [_edge(profiles, sim, p, c, told(p, c), merges) for p, c in local]
        if root in merges:
            edges += [_edge(profiles, sim, p, root, _MERGE, merges) for p in merges[root].parents]
        else:
            root_told = not local or any(told(p, c).score >= DECISIVE for p, c in local if p == root)
            roots.setdefault(int(family_of[root]), []).append((root, root_told))
    families = []
    first = {int(f): int(np.flatnonzero(family_of == f)[0]) for f in set(family_of.tolist())}
    for family in sorted(first, key=first.__getitem__):
        members_names = tuple(profiles[int(i)].name for i in np.flatnonzero(family_of == family))
        families += [Family(profiles[r].name, t, members_names) for r, t in roots.get(family, [])]
    nodes = tuple(Node(p.name, p.params, p.bits, p.grid, round(p.zeros, _DIGITS), round(p.kurtosis, _DIGITS))
                  for p in profiles)
    order = {p.name: i for i, p in enumerate(profiles)}
    edges.sort(key=lambda e: (order[e.child], order[e.parent]))
    return Tree(nodes, tuple(families), tuple(edges), RELATED)


def _edge(profiles: Sequence[ModelProfile], sim: np.ndarray, parent: int, child: int, cue: Direction,
          merges: dict[int, MergeFit]) -> Edge:
    if child in merges and parent in merges[child].parents:
        fit = merges[child]
        share = fit.weight if fit.parents[0] == parent else 1 - fit.weight
        kind, evidence = EdgeKind.MERGE, f"{share:.0%} of the merge (fit residual {fit.residual:.2f})"
    else:
        kind, evidence = edge_kind(profiles[parent], profiles[child])
    s = float(sim[parent, child])
    directed = cue.score >= DECISIVE
    if cue.cue and not directed:
        evidence += f"; the {cue.cue} cue points the other way"
    return Edge(profiles[parent].name, profiles[child].name, kind, round(s, _DIGITS), directed,
                round(cue.score, _DIGITS), cue.cue if directed else None,
                round(min(1.0, max(0.0, (s - RELATED) / (1 - RELATED))), _DIGITS), evidence)
