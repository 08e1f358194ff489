"""``tensorguard tree``: the family tree of a set of models, as text, Graphviz DOT and a figure
(files written only when asked, checked together before any model is read)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tensorguard.catalogue import Catalogue
from tensorguard.errors import TensorguardError
from tensorguard.genealogy import Edge, Tree, tree
from tensorguard.outputs import check_writable, write_all


def resolve(models: Sequence[str], catalogue: Catalogue | None) -> tuple[list[str], list[str | None]]:
    """Paths (and names) of ``models``: a path as it is; with a catalogue, a name that is no path is
    an entry, read where the catalogue read it."""
    paths = list(models)
    names: list[str | None] = [None] * len(models)
    if catalogue is None:
        return paths, names
    for i, model in enumerate(models):
        if Path(model).exists():
            continue
        entry = catalogue.entry(model)
        if entry.path is None:
            raise TensorguardError(f"{entry.name}: a fingerprint-only catalogue entry: a tree needs weights")
        paths[i], names[i] = entry.path, entry.name
    return paths, names


def tree_models(models: Sequence[str], *, catalogue: Catalogue | None = None, dot: str | Path | None = None,
                plot: str | Path | None = None, force: bool = False) -> Tree:
    """``tree`` over ``models`` (paths, or with ``catalogue`` its entries' names); the DOT file and
    the PNG figure written when given."""
    outputs = [Path(p) for p in (dot, plot) if p is not None]
    for path in outputs:  # before any slow work
        check_writable(path, force=force)
    paths, names = resolve(models, catalogue)
    result = tree(paths, names=names)
    files = []
    if dot is not None:
        files.append((Path(dot), render_dot(result).encode("utf-8")))
    if plot is not None:
        from tensorguard.plots import png_bytes
        from tensorguard.plots.tree import tree_figure

        files.append((Path(plot), png_bytes(tree_figure(result))))
    write_all(files, force=force)
    return result


def _label(e: Edge) -> str:
    how = f"{e.cue}" if e.directed else "direction not told"
    return f"{e.kind}, similarity {e.similarity:.3f}, {how}"


def render_text(t: Tree) -> str:
    """Each family as an indented tree, roots first; a merge shows under each of its parents."""
    lines = [f"{len(t.models)} models, {len(t.families)} "
             f"{'family' if len(t.families) == 1 else 'families'}, {len(t.edges)} edges"]
    shown: set[str] = set()

    def walk(name: str, prefix: str) -> None:
        below = [e for e in t.edges if e.parent == name]
        for i, e in enumerate(below):
            last = i == len(below) - 1
            again = e.child in shown
            others = [p for p in t.parents(e.child) if p != name]
            also = f"; also from {', '.join(others)}" if others else ""
            lines.append(f"{prefix}{'└── ' if last else '├── '}{e.child}  ({_label(e)}{also})"
                         + (" ..." if again and t.children(e.child) else ""))
            if not again:
                shown.add(e.child)
                walk(e.child, prefix + ("    " if last else "│   "))

    for family in t.families:
        lines.append("")
        lines.append(f"{family.root}  (root{'' if family.root_told else ', not told by the weights'})")
        shown.add(family.root)
        walk(family.root, "")
    return "\n".join(lines)


def render_dot(t: Tree) -> str:
    """Graphviz DOT: roots bold, edges labelled with their kind; undirected edges dashed."""
    roots = set(t.roots)
    lines = ["digraph tensorguard_tree {", "  rankdir=TB;", "  node [shape=box, fontname=Helvetica];"]
    lines += [f"  {json.dumps(m.name)}{' [style=bold]' if m.name in roots else ''};" for m in t.models]
    for e in t.edges:
        style = "" if e.directed else ", style=dashed, dir=none"
        lines.append(f"  {json.dumps(e.parent)} -> {json.dumps(e.child)} "
                     f"[label={json.dumps(str(e.kind))}{style}];")
    return "\n".join([*lines, "}"]) + "\n"
