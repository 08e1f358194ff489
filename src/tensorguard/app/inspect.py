"""``tensorguard inspect``: the header summary as text."""

from __future__ import annotations

from tensorguard import report
from tensorguard.summary import ModelSummary


def render_text(s: ModelSummary) -> str:
    shards = s.shards[0] if len(s.shards) == 1 else f"{len(s.shards)} files ({s.shards[0]} ...)"
    lines = [
        f"model        {s.name}",
        f"layout       {s.layout}  ({s.path})",
        f"files        {shards}",
        "dtypes       " + ", ".join(f"{d} ({report.fmt(n)} params)" for d, n in s.dtypes.items()),
        f"parameters   {report.fmt(s.total_params)} in {s.num_tensors} tensors",
        f"blocks       {s.num_blocks}",
        f"hidden size  {report.fmt(s.hidden_size)}",
        f"vocabulary   {report.fmt(s.vocab_size)}",
        "",
        report.table(["role", "tensors", "params"],
                     [[r.role, r.tensors, r.params] for r in s.roles]),
    ]
    return "\n".join(lines)
