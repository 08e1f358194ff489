"""``tensorguard index``: add models to the catalogue (a batch: one bad model fails alone, the
others are written together in one transaction), import fingerprints, list, show, remove; the
text reports."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tensorguard.app.batch import Outcome, Status, name_collision, run_batch
from tensorguard.catalogue import KNOWN_LABELS, Catalogue, Entry, PackImport, PackInfo, Row, is_pack
from tensorguard.devices import resolve_device
from tensorguard.errors import UsageError
from tensorguard.loading import open_model
from tensorguard.report import fmt, table


def add_models(catalogue: Catalogue, models: Sequence[str], *, labels: Mapping[str, str] | None = None,
               name: str | None = None, base: str | None = None, replace: bool = False,
               samples: int = 15, device: str = "auto",
               on_outcome: Callable[[Outcome[Row]], None] | None = None) -> list[Outcome[Row]]:
    """Measure each model (a model that fails is recorded and the others go on), then write every
    measured row in one transaction: an interrupt before the end writes nothing."""
    if name is not None and len(models) != 1:
        raise UsageError("{name} applies to a single model only", "name")
    resolve_device(device)
    with catalogue.open() as store:
        present = set(store.light().names)  # refused before the slow part, unless replace
    seen: dict[str, str] = {}

    def one(model: str) -> Outcome[Row]:
        with open_model(model, base=base, name=name) as source:
            name_collision(seen, model, source.name)
            if source.name in present and not replace:
                raise UsageError(f"{model}: {source.name!r} is already in the catalogue {catalogue.path} "
                                 "(remove it first, or add it with {replace})", "replace")
        # measured from the path (reopened: headers only), so the path given is the one recorded
        row = catalogue.measure(model, name=name, base=base, labels=labels, samples=samples, device=device)
        return Outcome(model, Status.WRITTEN, (str(catalogue.path),), result=row)

    outcomes = run_batch(models, one, on_outcome=on_outcome)
    rows = [o.result for o in outcomes if o.result is not None]
    if rows:
        catalogue.insert(rows, replace=replace)
    return outcomes


def _tags(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in KNOWN_LABELS) or "-"


def render_added(entries: Sequence[Entry]) -> str:
    return "\n".join(f"{e.name}: added ({e.origin}; labels {_labels(e.labels)})" for e in entries)


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"


def import_pack(inputs: Sequence[str], *, labels_file: str | None, label: str | None) -> bool:
    """Whether ``index import``'s inputs are one signature pack (else fingerprint files)."""
    packs = [p for p in inputs if is_pack(p)]
    if not packs:
        return False
    if len(inputs) > 1:
        raise UsageError(f"{packs[0]}: a signature pack is imported alone (one per run)")
    if labels_file is not None or label is not None:
        raise UsageError(f"{packs[0]}: a pack carries its own labels; {{labels_file}} and {{label}} "
                         "apply to fingerprint files", "labels_file", "label")
    return True


def render_pack(info: PackInfo) -> str:
    return (f"{info.path}: {info.rows} entries, {fmt(info.size)} bytes, pack version {info.version}, "
            f"sha256 {info.sha256[:16]}...")


def render_pack_import(result: PackImport) -> str:
    lines = [f"{e.name}: {'replaced' if e.name in result.replaced else 'added'} ({e.origin}; labels "
             f"{_labels(e.labels)})" for e in result.added]
    lines.append(f"{result.pack.path}: {len(result.added)} entries imported ({len(result.replaced)} "
                 f"replaced), {len(result.unchanged)} already present and equal")
    return "\n".join(lines)


def render_entries(entries: Sequence[Entry]) -> str:
    """One line per entry."""
    rows = [[e.name, e.origin.value, e.labels.get("base", "-"), e.labels.get("family", "-"),
             e.labels.get("licence", "-"), _tags(e.labels),
             fmt(e.signature_bytes) if e.signature_bytes else "-", e.path or "-"] for e in entries]
    counts = {o: sum(e.origin.value == o for e in entries) for o in ("model", "fingerprint", "builtin")}
    return (table(["name", "origin", "base", "family", "licence", "tags", "signature B", "path"], rows)
            + f"\n{len(entries)} entries: {counts['model']} with weights, {counts['fingerprint']} "
              f"fingerprint only, {counts['builtin']} built-in")


def render_entry(e: Entry) -> str:
    """Everything about one entry."""
    arch = e.architecture or {}
    lines = [f"name          {e.name}", f"origin        {e.origin}", f"labels        {_labels(e.labels)}",
             f"path          {e.path or '-'}", f"header hash   {e.header_hash or '-'}",
             f"signature     {fmt(e.signature_bytes) + ' bytes' if e.signature_bytes else '-'}",
             f"added         {e.added_at or '-'}"]
    if arch:
        lines += [f"architecture  {fmt(arch.get('total_params'))} parameters, {arch.get('num_blocks')} "
                  f"blocks, hidden {fmt(arch.get('hidden_size'))}, vocabulary {fmt(arch.get('vocab_size'))}"]
    if e.fingerprint is not None:
        lines += [f"fingerprint   {len(e.fingerprint.features)} features over {e.fingerprint.num_layers} "
                  "tensors"]
    return "\n".join(lines)
