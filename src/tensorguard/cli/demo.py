"""``tensorguard demo``: the whole method end to end, with nothing to download."""

from __future__ import annotations

import click

from tensorguard.cli.main import cli, emit
from tensorguard.cli.options import standard_options


@cli.command()
@click.option("--imgs", "imgs_dir", default="imgs/demo", show_default=True, type=click.Path(path_type=str),
              help="Where the demo's figures go (its own previous figures are replaced).")
@click.option("--samples", type=click.IntRange(min=1), default=15, show_default=True,
              help="Probe samples per fingerprint.")
@standard_options
def demo(imgs_dir: str, samples: int, as_json: bool) -> None:
    """Run the whole method end to end on tiny synthetic models and the bundled real fingerprints.

    Builds its models in a temporary folder, prints what each step finds, and writes its figures
    to --imgs.

    \b
    Examples:
      tensorguard demo
      tensorguard demo --imgs /tmp/tensorguard-demo --json
    """
    from tensorguard.app.demo import render_text, run_demo

    emit(run_demo(imgs_dir, num_samples=samples, log=None if as_json else click.echo),
         as_json, render_text)
