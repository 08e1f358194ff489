"""The catalogue verbs behind ``tensorguard index add/import/list/show/remove``.

A row holds a model's labels, where its weights were read from (path and ``header_hash``, so a
moved or changed file is noticed), its ``inspect`` summary, its paper fingerprint and its weight
signature. ``index import`` adds fingerprint-only rows from ``*_features.json`` files. The 43
bundled published fingerprints form a read-only built-in catalogue (``builtin_entries``), listed
and scanned alongside the file's rows unless turned off; a file row of the same name wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tensorguard.catalogue.store import Row, Store
from tensorguard.errors import TensorguardError
from tensorguard.features import Fingerprint, load_fingerprints, parse_fingerprint
from tensorguard.loading import ModelSource, open_model
from tensorguard.reference import LABELS_FILE, bundled_dir, load_labels
from tensorguard.signature import Signature, compute_signature, retrieval_vector

#: Label keys with a meaning; any other key is a free-form tag. ``license`` is read as ``licence``.
KNOWN_LABELS = ("base", "family", "licence")
_ALIASES = {"license": "licence"}
#: Bytes of tensor data hashed from the start, middle and end of each file, beside its header.
SAMPLE_BYTES = 4096


class Origin:
    """Where an entry comes from."""

    MODEL = "model"  # weights read by index add: fingerprint and signature
    FINGERPRINT = "fingerprint"  # index import: fingerprint only
    BUILTIN = "builtin"  # the bundled published fingerprints (read-only)


@dataclass(frozen=True)
class Entry:
    """One known model as ``index show`` reports it (arrays decoded on demand)."""

    name: str
    origin: str
    labels: dict[str, str]
    path: str | None
    header_hash: str | None
    architecture: dict | None
    fingerprint: Fingerprint | None
    signature_bytes: int | None
    added_at: str | None

    @property
    def base(self) -> str | None:
        return self.labels.get("base")


def parse_labels(text: str | None) -> dict[str, str]:
    """``base=Llama-3.1-8B,family=Llama,licence=restricted,tag=x`` -> dict (keys lower-cased)."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if not sep or not key or not value.strip():
            raise TensorguardError(f"--label {item!r}: expected key=value (e.g. base=Llama-3.1-8B)")
        if key in labels:
            raise TensorguardError(f"--label: {key!r} given twice")
        labels[key] = value.strip()
    return labels


def header_hash(source: ModelSource) -> str:
    """sha256 over each file's name-independent identity: size, safetensors header, and
    ``SAMPLE_BYTES`` of data from its start, middle and end (cheap, notices most changes)."""
    digest = hashlib.sha256()
    for shard in sorted(source.shards, key=lambda p: p.name):
        try:
            with shard.open("rb") as fh:
                size = shard.stat().st_size
                (length,) = struct.unpack("<Q", fh.read(8))
                digest.update(struct.pack("<QQ", size, length) + fh.read(length))
                data_start = 8 + length
                for offset in (data_start, (data_start + size) // 2, size - SAMPLE_BYTES):
                    fh.seek(max(data_start, offset))
                    digest.update(fh.read(SAMPLE_BYTES))
        except OSError as exc:
            raise TensorguardError(f"{shard}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def features_blob(fp: Fingerprint) -> bytes | None:
    """The 14 features as little-endian float64 (``None`` if the fingerprint lacks some)."""
    try:
        return fp.vector().astype("<f8").tobytes()
    except TensorguardError:
        return None


def _entry(row: Row) -> Entry:
    fp = parse_fingerprint(row.fingerprint, Path(row.name)) if row.fingerprint else None
    origin = Origin.MODEL if row.signature is not None else Origin.FINGERPRINT
    return Entry(row.name, origin, row.labels, row.path, row.header_hash, row.architecture, fp,
                 len(row.signature) if row.signature is not None else None, row.added_at)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Measured:
    """What ``index add`` reads from one model, before anything is written."""

    row: Row
    signature: Signature


def measure_model(model: str | Path, *, name: str | None = None, base: str | Path | None = None,
                  labels: Mapping[str, str] | None = None, num_samples: int = 15,
                  device: str = "auto") -> Measured:
    """Fingerprint and sign one model (the slow part) and build its catalogue row."""
    from tensorguard.fingerprint import fingerprint_model
    from tensorguard.summary import summarize

    with open_model(model, base=base, name=name) as source:
        summary = dataclasses.asdict(summarize(source))
        fp = fingerprint_model(source, num_samples=num_samples, device=device)
        sig = compute_signature(source)
        digest = header_hash(source)
        path = str(Path(model).resolve())
        tokens, vector = retrieval_vector(sig)
        row = Row(source.name, dict(labels or {}), path, digest, summary, fp.to_dict(),
                  features_blob(fp), sig.to_bytes(), tokens, vector.tobytes(), _now())
    return Measured(row, sig)


def add_models(models: Sequence[str | Path], *, db: str | Path | None = None,
               labels: Mapping[str, str] | None = None, name: str | None = None,
               base: str | Path | None = None, replace: bool = False, num_samples: int = 15,
               device: str = "auto", on_added: Callable[[Entry], None] | None = None) -> list[Entry]:
    """Measure each model, then write all rows in one transaction (all or nothing: an interrupt
    or a bad model leaves the catalogue unchanged)."""
    if not models:
        raise TensorguardError("index add: name at least one model")
    if name is not None and len(models) != 1:
        raise TensorguardError("--name applies to a single model only")
    with Store.open(db, writable=True) as store:
        rows: list[Row] = []
        for model in models:
            row = measure_model(model, name=name, base=base, labels=labels, num_samples=num_samples,
                                device=device).row
            if any(r.name == row.name for r in rows):
                raise TensorguardError(f"{model}: model name {row.name!r} is given twice; use --name")
            rows.append(row)
        store.put(rows, replace=replace)
    entries = [_entry(r) for r in rows]
    for entry in entries:
        if on_added is not None:
            on_added(entry)
    return entries


def import_fingerprints(paths: Sequence[str | Path], *, db: str | Path | None = None,
                        labels_file: str | Path | None = None, labels: Mapping[str, str] | None = None,
                        replace: bool = False) -> list[Entry]:
    """Add fingerprint-only rows from ``*_features.json`` files or folders (a folder's
    ``labels.csv`` labels its models' base and family unless ``labels_file`` is given)."""
    fps = load_fingerprints(paths)
    table = _labels_for(paths, labels_file)
    now = _now()
    rows = []
    for fp in fps:
        found = table.get(fp.model_name)
        row_labels = ({"base": found.base_model, **({"family": found.family} if found.family else {})}
                      if found else {})
        rows.append(Row(fp.model_name, {**row_labels, **(labels or {})}, None, None, None,
                        fp.to_dict(), features_blob(fp), None, None, None, now))
    with Store.open(db, writable=True) as store:
        store.put(rows, replace=replace)
    return [_entry(r) for r in rows]


def _labels_for(paths: Sequence[str | Path], labels_file: str | Path | None) -> dict:
    if labels_file is not None:
        return load_labels(labels_file)
    table: dict = {}
    for p in map(Path, paths):
        if p.is_dir() and (p / LABELS_FILE).is_file():
            table.update(load_labels(p / LABELS_FILE))
    return table


def builtin_entries() -> list[Entry]:
    """The bundled published fingerprints, labelled from ``labels.csv`` (read-only)."""
    directory = bundled_dir()
    labels = load_labels(directory / LABELS_FILE)
    out = []
    for fp in load_fingerprints([directory]):
        found = labels.get(fp.model_name)
        row_labels = ({"base": found.base_model, **({"family": found.family} if found.family else {})}
                      if found else {})
        out.append(Entry(fp.model_name, Origin.BUILTIN, row_labels, None, None, None, fp, None, None))
    return out


def list_entries(*, db: str | Path | None = None, builtin: bool = True) -> list[Entry]:
    """Every entry of the catalogue file, then the built-in ones it does not shadow, by name."""
    with Store.open(db) as store:
        entries = [_entry(r) for r in store.all()]
    if builtin:
        names = {e.name for e in entries}
        entries += [e for e in builtin_entries() if e.name not in names]
    return sorted(entries, key=lambda e: (e.name.lower(), e.name))


def show_entry(name: str, *, db: str | Path | None = None, builtin: bool = True) -> Entry:
    """One entry by exact name; an error naming close matches when there is none."""
    with Store.open(db) as store:
        row = store.get(name)
    if row is not None:
        return _entry(row)
    known = list_entries(db=db, builtin=builtin)
    for entry in known:
        if entry.name == name:
            return entry
    raise _unknown(name, [e.name for e in known], db)


def remove_entry(name: str, *, db: str | Path | None = None) -> Entry:
    """Remove one row of the catalogue file (built-in entries cannot be removed)."""
    with Store.open(db, writable=True) as store:
        row = store.get(name)
        if row is None:
            if any(e.name == name for e in builtin_entries()):
                raise TensorguardError(f"{name!r} is a built-in entry (read-only); it cannot be removed")
            raise _unknown(name, [r.name for r in store.all()], store.path)
        store.delete(name)
    return _entry(row)


def _unknown(name: str, names: list[str], db: object) -> TensorguardError:
    import difflib

    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return TensorguardError(f"{name!r} is not in the catalogue{f' {db}' if db else ''}{hint}")


def signature_of_row(row: Row) -> Signature | None:
    return Signature.from_bytes(row.signature, row.name) if row.signature is not None else None
