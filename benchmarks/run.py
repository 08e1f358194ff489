"""Run every benchmark and print one table: ``python benchmarks/run.py [--only GROUP]``.

Each ``bench_*.py`` module beside this file names its ``GROUP`` and offers
``cases(model, workdir) -> list[Case]`` (called only when its group is selected); the other
scripts here run on their own (each says how in its docstring).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import bench_model, measure  # noqa: E402
from tensorguard.report import table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=HERE / ".data")
    parser.add_argument("--only", help="run only this group of cases")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = bench_model(args.workdir)
    rows, results = [], []
    for module_path in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(f"benchmarks.{module_path.stem}")
        if args.only and args.only != module.GROUP:
            continue
        for case in module.cases(model, args.workdir):
            print(f"running {case.group}: {case.label} ...", file=sys.stderr)
            results.append(measure(case))
    for m in results:
        base = next((b for b in results if b.case.group == m.case.group and b.case.baseline), None)
        speed = f"{base.wall_s / m.wall_s:.1f}x" if base and base is not m else ""
        memory = f"{base.peak_mb / m.peak_mb:.1f}x" if base and base is not m else ""
        rows.append([m.case.group, m.case.label, round(m.wall_s, 2), round(m.peak_mb),
                     speed, memory])
    print(table(["benchmark", "method", "wall s", "peak MB", "faster", "less memory"], rows))


if __name__ == "__main__":
    main()
