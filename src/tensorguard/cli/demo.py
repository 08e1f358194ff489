"""``tensorguard demo``: the whole method end to end, with nothing to download."""

from __future__ import annotations

import click

from tensorguard.cli.main import cli, emit
from tensorguard.cli.options import standard_options


@cli.command()
@click.option("--plot", "--imgs", "imgs_dir", type=click.Path(file_okay=False, path_type=str),
              help="Draw the demo's figures into this folder (its own previous figures there are "
                   "replaced). Default: no figures.")
@click.option("--samples", type=click.IntRange(min=1), default=15, show_default=True,
              help="Probe samples per fingerprint.")
@standard_options
def demo(imgs_dir: str | None, samples: int, as_json: bool) -> None:
    """Run the whole method end to end on tiny synthetic models and the bundled real fingerprints.

    Builds its models in a temporary folder, removed at the end, and prints what each step finds.
    Nothing is written elsewhere unless --plot DIR asks for the figures.

    \b
    Examples:
      tensorguard demo
      tensorguard demo --plot figures/
      tensorguard demo --json
    """
    from tensorguard.app.demo import render_text, run_demo

    emit(run_demo(imgs_dir, num_samples=samples, log=None if as_json else click.echo),
         as_json, render_text)
