"""Options that several commands share, each declared once: the same flag has the same spelling,
type, range and help text everywhere."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tensorguard import progress

F = TypeVar("F", bound=Callable[..., Any])


class Interrupted(Exception):
    """Ctrl-C during a command."""


def _configure(quiet: bool, verbose: int) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else
                                         logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="tensorguard: %(message)s", stream=sys.stderr,
                        force=True)
    progress.configure(False if quiet else None)


def standard_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``, ``-q/--quiet`` and ``-v/--verbose``, on every command."""

    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bars or notices on stderr.")
    @click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debug).")
    @functools.wraps(func)
    def wrapper(*args: Any, quiet: bool, verbose: int, **kwargs: Any) -> Any:
        _configure(quiet, verbose)
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:  # past click, which would print a bare newline first
            raise Interrupted from None

    return wrapper


def models_argument(func: F) -> F:
    """MODELS...: one or more models (any supported layout)."""
    return click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))(func)


def model_argument(func: F) -> F:
    """MODEL: one model (any supported layout)."""
    return click.argument("model", type=click.Path(path_type=str))(func)


def base_option(func: F) -> F:
    """``--base``: the base model that LoRA adapters among the inputs are merged into."""
    return click.option("--base", type=click.Path(path_type=str), metavar="MODEL",
                        help="Base model of the LoRA adapters among the inputs.")(func)


def samples_option(func: F) -> F:
    """``--samples``: probe samples per tensor of a fingerprint."""
    return click.option("--samples", default=15, show_default=True, type=click.IntRange(min=1),
                        help="Probe samples per tensor of the fingerprint (the paper uses 15).")(func)


def device_option(func: F) -> F:
    """``--device``: where fingerprints are computed (the results do not depend on it)."""
    return click.option("--device", default="auto", show_default=True,
                        help="auto (CUDA when available), cpu, cuda or cuda:N. "
                             "Results do not depend on it.")(func)


def blocks_option(func: F) -> F:
    """``--blocks``: how many MLP blocks the independence test probes."""
    return click.option("--blocks", default=4, show_default=True, type=click.IntRange(min=1),
                        help="Evenly spaced MLP blocks probed by the independence test.")(func)


def force_option(func: F) -> F:
    """``--force``: replace existing output files."""
    return click.option("--force", is_flag=True, help="Overwrite existing output files.")(func)


def name_option(func: F) -> F:
    """``--name``: the name a single model is reported or stored under."""
    return click.option("--name", help="Name of the model (one model only; default: from its "
                                       "path).")(func)


def db_option(func: F) -> F:
    """``--db``: the catalogue file a command reads or writes; ``--timeout``: the longest wait for
    another process writing it."""
    func = click.option("--timeout", default=30.0, show_default=True, metavar="SECONDS",
                        type=click.FloatRange(min=0, max=86400),
                        help="Longest wait for another process writing the catalogue.")(func)
    return click.option("--db", type=click.Path(path_type=str), metavar="PATH",
                        help="Catalogue file [default: $TENSORGUARD_CATALOGUE, else "
                             "~/.cache/tensorguard/catalogue.sqlite].")(func)


def catalogue_options(func: F) -> F:
    """``--db`` and ``--no-builtin``: which catalogue a command reads."""
    func = click.option("--no-builtin", is_flag=True,
                        help="Leave out the built-in published fingerprints.")(func)
    return db_option(func)


def replace_option(func: F) -> F:
    """``--replace``: catalogue entries of the same name are replaced."""
    return click.option("--replace", is_flag=True, help="Replace entries of the same name.")(func)


def batch_models_argument(func: F) -> F:
    """[MODELS]... and ``--from FILE``: a batch of models, as arguments or one a line in a file."""
    func = click.option("--from", "from_file", type=click.Path(path_type=str), metavar="FILE",
                        help="Also the models listed in FILE, one a line (blank lines and # comments "
                             "skipped).")(func)
    return click.argument("models", nargs=-1, type=click.Path(path_type=str))(func)


def executor_options(func: F) -> F:
    """``--workers`` and ``--scheduler``: where a batch runs (default: in this process)."""
    func = click.option("--scheduler", metavar="ADDRESS", envvar="DASK_SCHEDULER_ADDRESS",
                        help="Run on the Dask cluster at ADDRESS (tcp://HOST:PORT) [env: "
                             "DASK_SCHEDULER_ADDRESS]. Needs tensorguard[distributed].")(func)
    return click.option("--workers", type=click.IntRange(min=1), metavar="N",
                        help="Run on a local Dask cluster of N worker processes. Needs "
                             "tensorguard[distributed].")(func)
