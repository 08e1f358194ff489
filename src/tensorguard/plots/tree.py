"""The figure of ``tree``: each family drawn top-down from its root, edges coloured by kind,
edges the weights cannot orient dashed and without an arrow head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tensorguard.genealogy import EdgeKind, Tree
from tensorguard.plots import PALETTE, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KIND_COLOURS = {kind: PALETTE[i] for i, kind in enumerate(EdgeKind)}


def _layout(t: Tree) -> dict[str, tuple[float, float]]:
    """(x, depth) of every model: leaves left to right in family order, a parent above the middle
    of its children, a merge below the deeper of its parents."""
    first_parent: dict[str, str] = {}
    for e in t.edges:
        first_parent.setdefault(e.child, e.parent)
    children: dict[str, list[str]] = {}
    for child, parent in first_parent.items():
        children.setdefault(parent, []).append(child)
    pos: dict[str, tuple[float, float]] = {}
    next_x = [0.0]

    def place(name: str, depth: int) -> float:
        kids = children.get(name, [])
        xs = [place(k, depth + 1) for k in kids]
        x = sum(xs) / len(xs) if xs else next_x[0]
        if not xs:
            next_x[0] += 1.0
        pos[name] = (x, float(depth))
        return x

    for root in t.roots:
        place(root, 0)
        next_x[0] += 0.5  # a gap between families
    for m in t.models:  # anything left (a family rooted only through merges)
        if m.name not in pos:
            place(m.name, 0)
    return pos


def tree_figure(t: Tree) -> Figure:
    """The forest: roots at the top (bold), one arrow per edge parent -> child."""
    pos = _layout(t)
    width = max(6.0, 1.3 * (max(x for x, _ in pos.values()) + 1))
    depth = max(d for _, d in pos.values())
    fig = new_figure(min(width, 40.0), max(3.0, 1.4 * (depth + 1) + 1))
    ax = fig.add_subplot()
    roots = set(t.roots)
    for e in t.edges:
        (x0, y0), (x1, y1) = pos[e.parent], pos[e.child]
        ax.annotate("", xy=(x1, -y1), xytext=(x0, -y0),
                    arrowprops={"arrowstyle": "-|>" if e.directed else "-", "color": KIND_COLOURS[e.kind],
                                "linestyle": "-" if e.directed else "--", "lw": 1.8,
                                "shrinkA": 12, "shrinkB": 12})
    for name, (x, y) in pos.items():
        ax.text(x, -y, name, ha="center", va="center", fontsize=8,
                fontweight="bold" if name in roots else "normal",
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "black" if name in roots else "grey"})
    used = sorted({e.kind for e in t.edges}, key=list(EdgeKind).index)
    for kind in used:
        ax.plot([], [], color=KIND_COLOURS[kind], lw=2, label=str(kind))
    if used:
        ax.legend(loc="lower right", fontsize=8, title="edge kind (dashed: direction not told)",
                  title_fontsize=8)
    ax.set_xlim(-0.8, max(x for x, _ in pos.values()) + 0.8)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.set_title(f"family tree of {len(t.models)} models ({len(t.families)} roots)")
    ax.axis("off")
    return fig
