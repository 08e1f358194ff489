"""Progress bars on stderr, shown only on a terminal and never in quiet mode."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_enabled: bool | None = None  # None: decide from whether stderr is a terminal


def configure(enabled: bool | None) -> None:
    """Force bars on or off (``None`` restores the terminal check). The CLI calls this for -q."""
    global _enabled
    _enabled = enabled


def bar(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar on stderr when bars are enabled."""
    from tqdm.auto import tqdm  # on first use: the CLI's start-up (--help) never needs it

    show = sys.stderr.isatty() if _enabled is None else _enabled
    return iter(
        tqdm(iterable, desc=desc, total=total, unit=unit, disable=not show, leave=False,
             file=sys.stderr, dynamic_ncols=True)
    )
