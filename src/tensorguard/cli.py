"""The ``tensorguard`` command: one thin click command per verb over the library.

Heavy modules (torch, scikit-learn, matplotlib) are imported inside each command so that
``tensorguard --help`` and ``tensorguard inspect`` start in a fraction of a second.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from tensorguard import __version__, progress
from tensorguard.errors import TensorguardError

log = logging.getLogger("tensorguard")


def _configure(quiet: bool, verbose: int) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else
                                         logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="tensorguard: %(message)s", stream=sys.stderr,
                        force=True)
    progress.configure(False if quiet else None)


def standard_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--json``, ``-q/--quiet`` and ``-v/--verbose`` to a command."""

    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bars or notices on stderr.")
    @click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debug).")
    @functools.wraps(func)
    def wrapper(*args: Any, quiet: bool, verbose: int, **kwargs: Any) -> Any:
        _configure(quiet, verbose)
        return func(*args, **kwargs)

    return wrapper


def emit(result: Any, as_json: bool, render_text: Callable[[Any], str]) -> None:
    """Print ``result`` as JSON (``--json``) or as the command's text report, on stdout."""
    from tensorguard import report

    click.echo(report.dumps(result) if as_json else render_text(result), nl=not as_json)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tensorguard")
def cli() -> None:
    """Tell where a large language model comes from, by reading only its weight files.

    \b
    Examples:
      tensorguard inspect model.safetensors
      tensorguard fingerprint ./Llama-3.2-1B -o features/
      tensorguard cluster features/ --centers llama-3.2-1b,Qwen2.5-3B
      tensorguard predict unknown_features.json --clusters clusters.json

    Exit codes: 0 success, 1 the work failed (for some models), 2 bad usage or bad input.
    """


@cli.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--base", type=click.Path(path_type=str), help="Base model of a LoRA adapter.")
@click.option("--name", help="Model name to report (default: from the path).")
@standard_options
def inspect(model: str, base: str | None, name: str | None, as_json: bool) -> None:
    """Summarise a model from its safetensors headers alone (reads no tensor data).

    \b
    Examples:
      tensorguard inspect llama-3.2-1b.safetensors
      tensorguard inspect ./Qwen2.5-7B-Instruct --json
      tensorguard inspect ./my-lora-adapter --base ./Llama-3.1-8B
    """
    from tensorguard import summary
    from tensorguard.loading import open_model

    with open_model(model, base=base, name=name) as source:
        emit(summary.summarize(source), as_json, summary.render_text)


def main() -> None:
    """Console entry point: one-line errors, documented exit codes, no tracebacks for bad input."""
    try:
        code = cli.main(standalone_mode=False)
    except TensorguardError as exc:
        click.echo(f"tensorguard: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("tensorguard: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("tensorguard: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input: say so in one line, traceback with -v
        if log.isEnabledFor(logging.INFO):
            raise
        click.echo(f"tensorguard: internal error: {type(exc).__name__}: {exc} "
                   "(rerun with -v for the traceback)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
