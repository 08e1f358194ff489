"""``tree``: the family tree of a set of models."""

from __future__ import annotations

import click

from tensorguard.cli.main import cli, emit
from tensorguard.cli.options import db_option, force_option, models_argument, standard_options


@cli.command()
@models_argument
@click.option("--dot", type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
              help="Write the tree as Graphviz DOT [default: none].")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
              help="Write the tree as a PNG figure [default: none].")
@force_option
@db_option
@standard_options
def tree(models: tuple[str, ...], dot: str | None, plot: str | None, force: bool, db: str | None,
         timeout: float, as_json: bool) -> None:
    """Who was derived from whom among MODELS: roots, directed edges parent -> child, edge kinds.

    Each model is read once (sampled rows of every matrix). Edges join related models; each is
    oriented by what a derivative gains (quantization grids, 16-bit casts, pruning zeros, weight
    drift), or reported undirected where the weights cannot tell. A merge shows both parents.
    With --db, a MODEL that is no path names a catalogue entry (read where it was indexed).

    \b
    Examples:
      tensorguard tree base/ finetune/ finetune-int8/ other-base/
      tensorguard tree releases/* --json
      tensorguard tree releases/* --dot tree.dot --plot tree.png
      tensorguard tree Llama-3.2-1B ./suspect-a ./suspect-b --db team.sqlite
    """
    from tensorguard.app.tree import render_text, tree_models

    catalogue = None
    if db is not None:
        from tensorguard.catalogue import Catalogue

        catalogue = Catalogue(db, builtin=False, timeout=timeout)
    emit(tree_models(models, catalogue=catalogue, dot=dot, plot=plot, force=force), as_json, render_text)
