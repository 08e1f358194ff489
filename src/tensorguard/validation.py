"""Checks on values, in one place: whole numbers, finite numbers, choices and ranges.

The predicates (``is_whole``, ``finite``) serve every reader of files; the ``*_option`` checks
raise ``OptionError`` for a bad parameter of a library call (``samples=0: must be ...``, spelled
``--samples 0: ...`` on the command line).
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from tensorguard.enums import TextEnum
from tensorguard.errors import OptionError

E = TypeVar("E", bound=TextEnum)


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a message."""
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_whole(value: Any, minimum: int | None = None) -> bool:
    """Whether ``value`` is an integer (not a boolean, not 4.0) of at least ``minimum``."""
    return type(value) is int and (minimum is None or value >= minimum)


def finite(value: Any) -> float | None:
    """``value`` as a finite float; ``None`` for a non-number (a boolean, a string), an infinity,
    a NaN, or an integer too large for a float (``10**400``, which ``math.isfinite`` cannot take)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def whole_option(option: str, value: Any, *, least: int = 1) -> int:
    """``value`` of parameter ``option``, a whole number of at least ``least``."""
    if not is_whole(value, least):
        raise OptionError(option, value, f"must be a whole number of at least {least}")
    return int(value)


def finite_option(option: str, value: Any, *, positive: bool = False) -> float:
    """``value`` of parameter ``option``, a finite (and with ``positive``, positive) number."""
    number = finite(value)
    if number is None or (positive and number <= 0):
        raise OptionError(option, value, "must be a positive number" if positive
                          else "must be a finite number")
    return number


def choice_option(enum: type[E], option: str, value: Any) -> E:
    """``value`` of parameter ``option`` as a member of ``enum``."""
    try:
        return enum(value)
    except ValueError:
        raise OptionError(option, value, f"choose one of {', '.join(e.value for e in enum)}") from None
