"""Checks on the values a model's own files give (configs, quant states, metadata): each bad value
is a one-line error naming the file, the setting and the value, never a ``TypeError`` later."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tensorguard.errors import TensorguardError
from tensorguard.validation import finite, is_whole, shown

#: Limits on a pattern key's quantifiers: unbounded ones (``.*``, ``\d+``) each multiply the work
#: of a match by the name's length, and every one (``a?``) at least doubles it.
MAX_UNBOUNDED = 2
MAX_QUANTIFIERS = 4


def integer(value: Any, what: str, where: Path, *, minimum: int = 1) -> int:
    """A whole-number setting of at least ``minimum`` (a JSON integer: not a boolean, not 4.0)."""
    if not is_whole(value, minimum):
        raise TensorguardError(f"{where}: {what} is {shown(value)}: must be an integer of at least "
                               f"{minimum}")
    return int(value)


def number(value: Any, what: str, where: Path) -> float:
    """A finite real setting (an integer or a float, not a boolean)."""
    result = finite(value)
    if result is not None:
        return result
    raise TensorguardError(f"{where}: {what} is {shown(value)}: must be a finite number")


def name_pattern(key: str, what: str, path: Path) -> re.Pattern[str]:
    """A PEFT pattern key as a regular expression matching a module name or a dotted tail of it
    (``q_proj`` matches ``model.layers.0.self_attn.q_proj``), refusing keys that could backtrack
    catastrophically."""
    where = f"{path}: {what} key {shown(key)}"
    try:
        pattern = re.compile(rf"(?:.*\.)?(?:{key})")
    except (re.error, RecursionError, OverflowError) as exc:
        raise TensorguardError(f"{where} is not a valid regular expression ({exc})") from None
    if _backtracks(key):
        raise TensorguardError(f"{where}: nested or repeated quantifiers (matching it could take "
                               "forever); name the modules instead")
    return pattern


def _backtracks(key: str) -> bool:
    """Whether a pattern may backtrack catastrophically: a quantified group holding a quantifier
    or an alternation (``(a+)+``, ``(a|ab)*``), more than ``MAX_UNBOUNDED`` unbounded quantifiers
    (each multiplies the work by the name's length) or more than ``MAX_QUANTIFIERS`` in all
    (``a?a?a?...`` doubles it with each)."""
    groups: list[bool] = []  # per open group: whether it holds a quantifier or an alternation
    unbounded = quantifiers = 0
    escaped = in_class = False
    for i, c in enumerate(key):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            groups.append(False)
        elif c == ")":
            inner = groups.pop() if groups else False
            if inner and key[i + 1:i + 2] in ("*", "+", "?", "{"):
                return True
            if groups:
                groups[-1] = groups[-1] or inner
        elif c in "*+?{|" and key[i - 1:i] != "(":  # not the ``?`` of ``(?:``
            quantifiers += c != "|"
            unbounded += c in "*+" or (c == "{" and re.match(r"\{\d*,\}", key[i:]) is not None)
            if groups:
                groups[-1] = True
    return unbounded > MAX_UNBOUNDED or quantifiers > MAX_QUANTIFIERS
