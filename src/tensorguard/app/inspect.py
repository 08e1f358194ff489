"""``tensorguard inspect``: the header summary as text."""

from __future__ import annotations

from tensorguard import report
from tensorguard.loading import GgufClaims
from tensorguard.summary import ModelSummary


def _claims(c: GgufClaims) -> list[str]:
    """What a GGUF file says about itself, labelled as a claim."""
    said = {"architecture": c.architecture, "name": c.name, "organization": c.organization,
            "size label": c.size_label, "file type": c.file_type, "blocks": c.block_count,
            "embedding length": c.embedding_length, "feed-forward length": c.feed_forward_length,
            "heads": c.head_count, "key/value heads": c.head_count_kv, "vocabulary": c.vocab_size,
            "context length": c.context_length}
    lines = ["", "the file claims (GGUF metadata, not checked against the weights):"]
    lines += [f"  {key:20} {report.fmt(v) if isinstance(v, int) else v}" for key, v in said.items()
              if v is not None]
    for b in c.base_models:
        parts = [p for p in (b.organization, b.name, b.version) if p]
        where = f" ({b.repo_url})" if b.repo_url else ""
        lines.append(f"  {'base model':20} {' / '.join(parts) or '-'}{where}")
    return lines


def render_text(s: ModelSummary) -> str:
    shards = s.shards[0] if len(s.shards) == 1 else f"{len(s.shards)} files ({s.shards[0]} ...)"
    tie = {True: "tied to the embedding (no separate output head)", False: "separate output head",
           None: "-"}[s.tied_embeddings]
    lines = [
        f"model        {s.name}",
        f"format       {s.format}",
        f"layout       {s.layout}  ({s.path})",
        f"files        {shards}",
        "dtypes       " + ", ".join(f"{d} ({report.fmt(n)} params)" for d, n in s.dtypes.items()),
        f"parameters   {report.fmt(s.total_params)} in {s.num_tensors} tensors",
        f"blocks       {s.num_blocks}",
        f"hidden size  {report.fmt(s.hidden_size)}",
        f"vocabulary   {report.fmt(s.vocab_size)}",
        f"output head  {tie}",
        "",
        report.table(["role", "tensors", "params"],
                     [[r.role, r.tensors, r.params] for r in s.roles]),
    ]
    if s.quantization:
        lines += ["", "quantized weights:", report.table(
            ["role", "scheme", "tensors", "params", "bits/weight", "group size"],
            [[q.role, q.scheme, q.tensors, q.params, q.bits_per_weight, q.group_size]
             for q in s.quantization])]
    if s.claims is not None:
        lines += _claims(s.claims)
    return "\n".join(lines)
