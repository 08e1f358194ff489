"""``tensorguard inspect`` on the 2.5 GB file: headers only, so well under a second and 200 MB."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import TENSORGUARD, Case

GROUP = "inspect"


def cases(model: Path, workdir: Path) -> list[Case]:
    argv = [*TENSORGUARD, "inspect", str(model), "--json"]
    return [Case(GROUP, "tensorguard inspect --json", argv)]
