"""Checks on the values a model's own files give (configs, quant states, metadata): each bad value
is a one-line error naming the file, the setting and the value, never a ``TypeError`` later."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tensorguard.errors import TensorguardError


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a message."""
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def integer(value: Any, what: str, where: Path, *, minimum: int = 1) -> int:
    """A whole-number setting of at least ``minimum`` (a JSON integer: not a boolean, not 4.0)."""
    if type(value) is not int or value < minimum:
        raise TensorguardError(f"{where}: {what} is {shown(value)}: must be an integer of at least "
                               f"{minimum}")
    return value


def number(value: Any, what: str, where: Path) -> float:
    """A finite real setting (an integer or a float, not a boolean)."""
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:  # an integer of hundreds of digits
            result = math.inf
        if math.isfinite(result):
            return result
    raise TensorguardError(f"{where}: {what} is {shown(value)}: must be a finite number")
