"""``tensorguard index``: add models to the catalogue (a batch: one bad model fails alone, one
already there unchanged is skipped, the others are committed in batched transactions; in this
process or on Dask, ``executors``), import fingerprints or a signature pack, export a pack, list,
show, remove; the text reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tensorguard.app.batch import Outcome, Status, name_collision
from tensorguard.app.executors import Executor, LocalExecutor
from tensorguard.catalogue import (
    KNOWN_LABELS,
    Catalogue,
    Damage,
    Entry,
    PackImport,
    PackInfo,
    Row,
    header_hash,
    is_pack,
)
from tensorguard.catalogue.entries import entry_of, measure_model
from tensorguard.devices import resolve_device
from tensorguard.errors import TensorguardError, UsageError
from tensorguard.loading import open_model
from tensorguard.outputs import deferred_interrupts
from tensorguard.progress import Tally
from tensorguard.report import fmt, table
from tensorguard.validation import whole_option

#: Measured rows are committed in transactions of this many (and at the end, or on Ctrl-C).
COMMIT_EVERY = 32


def measure_entry(model: str, *, present: Mapping[str, str | None], replace: bool, name: str | None,
                  base: str | None, labels: Mapping[str, str] | None, samples: int,
                  device: str) -> Outcome[Row]:
    """One model of ``index add`` (in this process or on a worker): ``skipped`` when the catalogue
    (``present``: name -> header hash) holds it with the same header hash, else its measured row."""
    if name in present or name is None:  # headers only: the model's name and, if taken, its hash
        with open_model(model, base=base, name=name) as source:
            if source.name in present and not replace:
                if present[source.name] is not None and header_hash(source) == present[source.name]:
                    return Outcome(model, Status.SKIPPED, error=f"{model}: {source.name!r} is already in "
                                   "the catalogue with the same header hash")
                raise UsageError(f"{model}: {source.name!r} is already in the catalogue, from other weights "
                                 "(remove it first, or add it with {replace})", "replace")
    # measured from the path (reopened: headers only), so the path given is the one recorded
    row = measure_model(model, name=name, base=base, labels=labels, samples=samples, device=device)
    return Outcome(model, Status.WRITTEN, result=row)


def add_models(catalogue: Catalogue, models: Sequence[str], *, labels: Mapping[str, str] | None = None,
               name: str | None = None, base: str | None = None, replace: bool = False,
               samples: int = 15, device: str = "auto", executor: Executor | None = None,
               commit_every: int = COMMIT_EVERY,
               on_outcome: Callable[[Outcome[Row]], None] | None = None) -> list[Outcome[Row]]:
    """Measure each model (a model that fails is recorded and the others go on; one already
    catalogued with the same header hash is skipped, so an interrupted batch resumes where it
    stopped) and commit the measured rows ``commit_every`` at a time. Ctrl-C commits the rows
    measured so far, then stops: every finished model is kept, nothing is half-written.
    ``executor`` (default: this process) is where models are measured; only this process writes."""
    if name is not None and len(models) != 1:
        raise UsageError("{name} applies to a single model only", "name")
    whole_option("commit_every", commit_every, least=1)
    resolve_device(device)
    with catalogue.open() as store:
        light = store.light(vectors=False)
        present = dict(zip(light.names, light.hashes, strict=True))
    catalogue.check_writable()  # refused before the slow part
    seen: dict[str, str] = {}
    found: dict[int, Outcome[Row]] = {}
    pending: list[Row] = []

    def commit() -> None:
        rows = pending[:]
        pending.clear()
        if rows:
            with deferred_interrupts():
                catalogue.insert(rows, replace=replace)

    tally = Tally(len(models), "index add")
    try:
        with executor or LocalExecutor() as runner:
            for i, outcome in runner.run(measure_entry, models, present=present, replace=replace, name=name,
                                         base=base, labels=labels, samples=samples, device=device):
                if outcome.result is not None:
                    try:
                        name_collision(seen, outcome.model, outcome.result.name)
                        pending.append(outcome.result)
                        outcome = dataclasses.replace(outcome, paths=(str(catalogue.path),))
                    except TensorguardError as exc:
                        outcome = Outcome(outcome.model, Status.FAILED, error=str(exc))
                found[i] = outcome
                tally.update(outcome.status.value)
                if on_outcome is not None:
                    on_outcome(outcome)
                if len(pending) >= commit_every:
                    commit()
    finally:
        tally.close()
        commit()
    return [found[i] for i in sorted(found)]


def _tags(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in KNOWN_LABELS) or "-"


def render_added(entries: Sequence[Entry]) -> str:
    return "\n".join(f"{e.name}: added ({e.origin}; labels {_labels(e.labels)})" for e in entries)


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"


def render_add(outcomes: Sequence[Outcome[Row]]) -> str:
    """``index add``'s report: each model added or skipped (failures went to stderr), and the tally."""
    lines = [render_added([entry_of(o.result)]) if o.result is not None else f"{o.error} (skipped)"
             for o in outcomes if o.status is not Status.FAILED]
    counts = {s: sum(o.status is s for o in outcomes) for s in Status}
    if len(outcomes) > 1:
        lines.append(f"{len(outcomes)} models: {counts[Status.WRITTEN]} added, {counts[Status.SKIPPED]} "
                     f"already in the catalogue (skipped), {counts[Status.FAILED]} failed")
    return "\n".join(lines)


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


def render_damage(damage: Sequence[Damage], path: Path, *, removed: bool) -> str:
    """One line per damaged row, then what was done."""
    if not damage:
        return f"{path}: no damaged entries"
    lines = [f"{d}" for d in damage]
    done = "removed" if removed else "found (remove them with tensorguard index repair --remove)"
    count = f"{len(damage)} damaged {'entry' if len(damage) == 1 else 'entries'}"
    return "\n".join([*lines, f"{path}: {count} {done}"])
