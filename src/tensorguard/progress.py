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


class Tally:
    """A batch's progress bar: models done of the total, throughput and time left (tqdm's), and
    the outcome counts (written, skipped, failed) with what remains."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if _enabled is None else _enabled
        self.counts: dict[str, int] = {}
        self.total = total
        self._bar = tqdm(total=total, desc=desc, unit="model", disable=not show, leave=False,
                         file=sys.stderr, dynamic_ncols=True)

    def update(self, status: str) -> None:
        """One model finished with ``status`` (``written``, ``skipped`` or ``failed``)."""
        self.counts[status] = self.counts.get(status, 0) + 1
        self._bar.update(1)
        self._bar.set_postfix({**self.counts, "remaining": self.total - sum(self.counts.values())})

    def close(self) -> None:
        self._bar.close()
