"""The one exception type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class TensorguardError(Exception):
    """Bad input or bad usage: a message a user can act on, shown without a traceback."""

    exit_code = 2
