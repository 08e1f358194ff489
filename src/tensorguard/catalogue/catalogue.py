"""``Catalogue``: the known models ``scan`` looks a model up in.

A handle on a catalogue file (SQLite; ``store``) plus, unless ``builtin=False``, the bundled
published fingerprints as read-only entries; a file row of the same name wins over a built-in
one. Each call opens the file, does its work in one transaction and closes it, so several
processes may use one catalogue (readers never wait for a writer).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tensorguard.catalogue.entries import (
    Entry,
    Origin,
    builtin_entries,
    entry_of,
    fingerprint_row,
    label_of,
    measure_model,
    normalise_labels,
    now,
)
from tensorguard.catalogue.packs import PackInfo, is_pack, read_pack, rows_digest, verify_pack, write_pack
from tensorguard.catalogue.store import BUSY_TIMEOUT_S, Damage, Row, Store, check_writable, default_db_path
from tensorguard.errors import TensorguardError, UsageError
from tensorguard.fingerprints import load_fingerprints
from tensorguard.loading import ModelInput
from tensorguard.reference import LABELS_FILE, Label, load_labels


@dataclass(frozen=True)
class PackImport:
    """What ``import_pack`` did: entries added, left as they were (equal), replaced."""

    pack: PackInfo
    added: tuple[Entry, ...]
    unchanged: tuple[str, ...]
    replaced: tuple[str, ...]


class Catalogue:
    """Known models: a catalogue file and the built-in published fingerprints.

    Args:
        path: the SQLite file (default: ``$TENSORGUARD_CATALOGUE``, else
            ``~/.cache/tensorguard/catalogue.sqlite``); created on the first write.
        builtin: list and scan the bundled published fingerprints too.
        timeout: the longest wait, in seconds, for another process writing the file.

    Example::

        catalogue = tensorguard.Catalogue("catalogue.sqlite")
        catalogue.add(["./Llama-3.2-1B"], labels={"base": "Llama-3.2-1B", "licence": "restricted"})
        print([e.name for e in catalogue.entries()])
    """

    def __init__(self, path: str | Path | None = None, *, builtin: bool = True,
                 timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.builtin = builtin
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Catalogue({str(self.path)!r}, builtin={self.builtin})"

    def open(self, *, writable: bool = False) -> Store:
        """The file, opened (a missing file reads as empty). A signature pack is read directly,
        once checked whole (``packs``), and is never written to."""
        if is_pack(self.path):
            if writable:
                raise TensorguardError(f"{self.path}: is a signature pack (read-only); import it into a "
                                       "catalogue to add or remove entries")
            verify_pack(self.path)
        return Store.open(self.path, writable=writable, timeout=self.timeout)

    def check_writable(self) -> None:
        """Refuse at once a catalogue that cannot be written (a read-only file or folder, or a pack)."""
        if is_pack(self.path):
            raise TensorguardError(f"{self.path}: is a signature pack (read-only); import it into a "
                                   "catalogue to add or remove entries")
        check_writable(self.path)

    # ---- adding

    def measure(self, model: ModelInput, *, name: str | None = None, base: ModelInput | None = None,
                labels: Mapping[str, str] | None = None, samples: int = 15,
                device: str = "auto") -> Row:
        """Read one model (fingerprint, signature, summary, header hash): its row, not yet written."""
        return measure_model(model, name=name, base=base, labels=labels, samples=samples, device=device)

    def insert(self, rows: Sequence[Row], *, replace: bool = False) -> list[Entry]:
        """Write measured rows in one transaction: all of them, or (an error, an interrupt) none."""
        names = [r.name for r in rows]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise UsageError(f"model name {twice[0]!r} is given twice; rename one with {{name}}", "name")
        with self.open(writable=True) as store:
            store.put(rows, replace=replace)
        return [entry_of(r) for r in rows]

    def add(self, models: Sequence[ModelInput], *, labels: Mapping[str, str] | None = None,
            name: str | None = None, base: ModelInput | None = None, replace: bool = False,
            samples: int = 15, device: str = "auto") -> list[Entry]:
        """Measure each model, then write them all in one transaction (all or nothing)."""
        if not models:
            raise UsageError("name at least one model to add", "models")
        if name is not None and len(models) != 1:
            raise UsageError("{name} applies to a single model only", "name")
        return self.insert([self.measure(m, name=name, base=base, labels=labels, samples=samples,
                                         device=device) for m in models], replace=replace)

    def import_fingerprints(self, paths: Sequence[str | Path], *, labels_file: str | Path | None = None,
                            labels: Mapping[str, str] | None = None,
                            replace: bool = False) -> list[Entry]:
        """Add fingerprint-only rows from ``*_features.json`` files or folders. Each row's base and
        family come from ``labels_file`` (else a folder's own ``labels.csv``); ``labels`` are added
        to every row."""
        fps = load_fingerprints(paths)
        table = _labels_for(paths, labels_file)
        extra, added_at = normalise_labels(labels), now()
        return self.insert([fingerprint_row(fp, {**label_of(table.get(fp.model_name)), **extra}, added_at)
                            for fp in fps], replace=replace)

    # ---- signature packs

    def export_pack(self, path: str | Path, *, force: bool = False) -> PackInfo:
        """Write every entry of the file (signatures included; not the built-in ones, which ship
        with tensorguard) as one signature pack at ``path``."""
        from tensorguard import __version__

        with self.open() as store:
            rows = [dataclasses.replace(r, signature=store.signature(r.name), signature_size=None)
                    for r in store.all()]
        if not rows:
            raise TensorguardError(f"{self.path}: the catalogue has no entries to export")
        return write_pack(rows, path, force=force, created_by=f"tensorguard {__version__}")

    def import_pack(self, path: str | Path, *, replace: bool = False) -> PackImport:
        """Merge the pack at ``path`` (checked whole first) into the file, in one transaction.
        Entries equal to the file's are left as they are; an entry whose name is taken by a
        different one is a conflict: all are reported and nothing is written, unless ``replace``."""
        info, rows = read_pack(path)
        with self.open() as store:
            present = {r.name: r for r in store.all()}
            same: list[str] = []
            conflicts: list[str] = []
            for row in rows:
                if (old := present.get(row.name)) is not None:
                    old = dataclasses.replace(old, signature=store.signature(old.name), signature_size=None)
                    (same if rows_digest([old]) == rows_digest([row]) else conflicts).append(row.name)
        if conflicts and not replace:
            more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
            shown = ", ".join(conflicts[:5]) + more
            raise UsageError(f"{path}: {len(conflicts)} entries of the pack are named like different entries "
                             f"of {self.path}: {shown}; nothing was imported (replace them with {{replace}})",
                             "replace")
        new = [r for r in rows if r.name not in same]
        added = self.insert(new, replace=replace) if new else []
        return PackImport(info, tuple(added), tuple(same), tuple(conflicts))

    # ---- reading and removing

    def entries(self) -> list[Entry]:
        """Every entry of the file, then the built-in ones it does not shadow, by name. A damaged
        row is left out, with a warning naming it (``check`` lists them, ``repair`` removes them)."""
        with self.open() as store:
            found = [e for r in store.all() if (e := _entry(store, r)) is not None]
            store.warn()
        if self.builtin:
            names = {e.name for e in found}
            found += [e for e in builtin_entries() if e.name not in names]
        return sorted(found, key=lambda e: (e.name.lower(), e.name))

    def entry(self, name: str) -> Entry:
        """One entry by exact name; an error naming close matches when there is none."""
        with self.open() as store:
            row = store.get(name)
            found = _entry(store, row) if row is not None else None
            damaged = [d for d in store.damage.values() if d.name == name]
        if damaged:
            raise TensorguardError(f"{self.path}: {damaged[0]} (tensorguard index repair removes it)")
        if found is not None:
            return found
        known = self.entries()
        for entry in known:
            if entry.name == name:
                return entry
        raise self._unknown(name, [e.name for e in known])

    def remove(self, name: str) -> Entry:
        """Remove one row of the file (built-in entries cannot be removed); a damaged row too."""
        with self.open(writable=True) as store:
            row = store.get(name)
            entry = _entry(store, row) if row is not None else None
            damaged = [d for d in store.damage.values() if d.name == name]
            if damaged:  # a damaged row can always be removed by name
                store.delete_rows(damaged)
                return Entry(name, Origin.FINGERPRINT, {}, None, None, None, None, None, None)
            if entry is None:
                if any(e.name == name for e in builtin_entries()):
                    raise TensorguardError(f"{name!r} is a built-in entry (read-only); it cannot be removed")
                raise self._unknown(name, [r.name for r in store.all()])
            store.delete(name)
        return entry

    def check(self) -> list[Damage]:
        """The file's damaged rows (nothing is changed)."""
        with self.open() as store:
            return _check(store)

    def repair(self) -> list[Damage]:
        """Remove the file's damaged rows in one transaction; the rows removed."""
        with self.open() as store:
            damage = _check(store)
        if damage:
            with self.open(writable=True) as store:
                store.delete_rows(damage)
        return damage

    def _unknown(self, name: str, names: list[str]) -> TensorguardError:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        return TensorguardError(f"{name!r} is not in the catalogue {self.path}{hint}")


def _entry(store: Store, row: Row) -> Entry | None:
    """``row`` as an entry; ``None`` (and recorded as damaged) when its fingerprint is unreadable."""
    try:
        return entry_of(row)
    except TensorguardError as exc:
        store.record_damage(row.name, f"its fingerprint is unreadable ({str(exc).partition(': ')[2]})")
        return None


def _check(store: Store) -> list[Damage]:
    found = {d.rowid: d for d in store.check()}
    for row in store.all():
        _entry(store, row)
    found.update(store.damage)
    return sorted(found.values(), key=lambda d: d.rowid)


def _labels_for(paths: Sequence[str | Path], labels_file: str | Path | None) -> dict[str, Label]:
    if labels_file is not None:
        return load_labels(labels_file)
    table: dict[str, Label] = {}
    for p in map(Path, paths):
        if p.is_dir() and (p / LABELS_FILE).is_file():
            table.update(load_labels(p / LABELS_FILE))
    return table
