"""The command group, what every command prints through, the exit codes, and the one place where
errors become one line on stderr."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import click

from tensorguard import __version__
from tensorguard.cli.options import Interrupted
from tensorguard.errors import TensorguardError

log = logging.getLogger("tensorguard")

#: Exit codes (documented in ``tensorguard --help`` and the README).
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_POLICY, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 3, 70, 130

#: How the library's parameter names are spelled on the command line, where they differ.
FLAGS = {"kinds": "--noise", "out_dir": "--output", "save_to": "--save", "random_state": "--seed",
         "catalogue": "--db", "labels_file": "--labels", "from_file": "--from"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tensorguard")
def cli() -> None:
    """Tell where a large language model comes from, by reading only its weight files.

    \b
    Examples:
      tensorguard inspect model.safetensors
      tensorguard fingerprint ./Llama-3.2-1B -o my_features/
      tensorguard cluster --centers llama-3.2-1b,Qwen2.5-3B
      tensorguard predict unknown_features.json --clusters clusters.json
      tensorguard index add ./Llama-3.2-1B --label licence=restricted
      tensorguard scan ./suspect-model

    Exit codes: 0 success, 1 the work failed (for some models), 2 bad usage or bad input,
    3 scan found a model derived from a catalogue entry matching --policy,
    70 an internal error (a bug: please report it), 130 interrupted.
    """


def emit(result: Any, as_json: bool, render_text: Callable[[Any], str], *,
         fetched: int | Sequence[int | None] | None = None) -> None:
    """Print ``result`` as JSON (``--json``) or as the command's text report, on stdout.

    ``fetched``: the bytes fetched over the network to compute ``result`` (for a list, one per
    item), ``None`` where no remote model was read. The JSON of a result that read a remote model
    gains ``bytes_fetched``; a local result's JSON is unchanged."""
    from tensorguard import report

    if as_json and fetched is not None:
        result = report.to_jsonable(result)
        items, counts = (result, fetched) if isinstance(fetched, Sequence) else ([result], [fetched])
        for item, count in zip(items, counts, strict=True):
            if count is not None and isinstance(item, dict):
                item["bytes_fetched"] = count
    click.echo(report.dumps(result) if as_json else render_text(result), nl=not as_json)


def report_failure(outcome: Any) -> None:
    """Say on stderr that one model of a batch failed, as it happens."""
    from tensorguard.app.batch import Status

    if outcome.status is Status.FAILED:
        click.echo(f"tensorguard: error: {outcome.error}", err=True)


def exit_if_failed(outcomes: Iterable[Any]) -> None:
    """Exit 1 when some model of a batch failed (each was reported as it happened)."""
    from tensorguard.app.batch import Status

    if any(o.status is Status.FAILED for o in outcomes):
        raise SystemExit(EXIT_FAILED)


def one_line(message: str) -> str:
    """``message`` on one line: control characters (a newline in a file name) shown escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"tensorguard: {one_line(message)}", err=True)
    sys.exit(code)


def main() -> None:
    """Run the command line: one-line errors, documented exit codes, no tracebacks for bad input."""
    try:
        code = cli.main(standalone_mode=False)
    except TensorguardError as exc:
        _fail(f"error: {exc.for_cli(FLAGS)}", exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # a usage error: one line, the way to the help
        command = " ".join(sys.argv[1:2])
        _fail(f"error: {exc.format_message()} (see tensorguard {command} --help)".replace("  ", " "),
              EXIT_BAD_INPUT)
    except (click.Abort, KeyboardInterrupt, Interrupted):
        _fail("interrupted", EXIT_INTERRUPTED)
    except MemoryError:
        _fail("error: out of memory", EXIT_FAILED)
    except Exception as exc:  # a bug, not bad input: say so in one line, traceback with -v
        if log.isEnabledFor(logging.INFO):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)",
              EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """The console script. Once the command has finished, the process ends at once: every output
    is written, flushed and closed by then, and the interpreter's teardown (torch's exit handlers
    take about half a second) has nothing left to do; a late Ctrl-C is ignored, so it can never
    print a traceback from an exit handler either."""
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a closed pipe (``| head``): nothing more can be said
            stream.flush()
    os._exit(code)
