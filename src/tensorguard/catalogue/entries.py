"""Catalogue entries: what a row holds, how one is measured from a model, and the built-in set.

A row holds a model's labels, where its weights were read from (path, and ``header_hash`` so a
moved or changed file is noticed), its ``inspect`` summary, its paper fingerprint and its weight
signature. Fingerprint-only rows come from ``*_features.json`` files. The bundled published
fingerprints form a read-only built-in catalogue (``builtin_entries``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from tensorguard.catalogue.store import Row
from tensorguard.enums import TextEnum
from tensorguard.errors import OptionError, TensorguardError
from tensorguard.fingerprints import Fingerprint, load_fingerprints, parse_fingerprint
from tensorguard.loading import ModelInput, ModelSource, bytesource, opened
from tensorguard.reference import LABELS_FILE, Label, bundled_dir, load_labels
from tensorguard.report import to_jsonable

#: Label keys with a meaning; any other key is a free-form tag. ``license`` is read as ``licence``.
KNOWN_LABELS = ("base", "family", "licence")
_ALIASES = {"license": "licence"}
#: ``header_hash`` reads ``SAMPLE_BYTES`` at ``SAMPLES`` evenly spaced offsets of every file.
SAMPLE_BYTES, SAMPLES = 4096, 16


class Origin(TextEnum):
    """Where an entry comes from."""

    MODEL = "model"  # weights read by index add: fingerprint and signature
    FINGERPRINT = "fingerprint"  # index import: fingerprint only
    BUILTIN = "builtin"  # the bundled published fingerprints (read-only)


@dataclass(frozen=True)
class Entry:
    """One known model."""

    name: str
    origin: Origin
    labels: dict[str, str]
    path: str | None  # where its weights were read (None: fingerprint only)
    header_hash: str | None
    architecture: dict[str, Any] | None  # its inspect summary
    fingerprint: Fingerprint | None
    signature_bytes: int | None
    added_at: str | None

    @property
    def base(self) -> str | None:
        return self.labels.get("base")

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``: the fingerprint as its published JSON object."""
        return {"name": self.name, "origin": self.origin, "labels": self.labels, "path": self.path,
                "header_hash": self.header_hash, "architecture": self.architecture,
                "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None,
                "signature_bytes": self.signature_bytes, "added_at": self.added_at}


def normalise_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Keys lower-cased (``license`` read as ``licence``), values stripped; empty ones refused."""
    out: dict[str, str] = {}
    for key, value in (labels or {}).items():
        name = _ALIASES.get(str(key).strip().lower(), str(key).strip().lower())
        if not name or not isinstance(value, str) or not value.strip():
            raise OptionError("labels", dict(labels or {}), f"{key!r}: expected a non-empty key and value")
        if name in out:
            raise OptionError("labels", dict(labels or {}), f"{name!r} given twice")
        out[name] = value.strip()
    return out


def parse_labels(text: str | None, *, option: str = "label") -> dict[str, str]:
    """``base=Llama-3.1-8B,family=Llama,licence=restricted,team=x`` -> a label dict (``option``
    names the parameter in errors)."""
    pairs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise OptionError(option, text, f"{item!r}: expected key=value (e.g. base=Llama-3.1-8B)")
        pairs.append((key, value))
    keys = [_ALIASES.get(k.strip().lower(), k.strip().lower()) for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise OptionError(option, text, "a key is given twice")
    return normalise_labels(dict(pairs))


def header_hash(source: ModelSource) -> str:
    """sha256 over what the headers say (every tensor's name, shape and type) and, for each file
    in name order, its size and ``SAMPLE_BYTES`` at ``SAMPLES`` evenly spaced offsets: the same for a
    moved copy, different for a re-saved fine-tune (its tensor bytes change everywhere)."""
    digest = hashlib.sha256(json.dumps([[i.name, list(i.shape), i.dtype]
                                        for i in source.tensors.values()]).encode())
    for shard in sorted(source.shards, key=lambda p: p.name):
        try:
            with shard.open("rb") as fh:
                size = shard.stat().st_size
                digest.update(struct.pack("<Q", size))
                for k in range(SAMPLES):
                    offset = k * max(0, size - SAMPLE_BYTES) // (SAMPLES - 1)
                    bytesource.need(shard, offset, SAMPLE_BYTES)
                    fh.seek(offset)
                    digest.update(fh.read(SAMPLE_BYTES))
        except OSError as exc:
            raise TensorguardError(f"{shard}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def features_blob(fp: Fingerprint) -> bytes | None:
    """The 14 features as little-endian float64 (``None`` if the fingerprint lacks some)."""
    try:
        return bytes(fp.vector().astype("<f8").tobytes())
    except TensorguardError:
        return None


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def measure_model(model: ModelInput, *, name: str | None = None, base: ModelInput | None = None,
                  labels: Mapping[str, str] | None = None, samples: int = 15,
                  device: str = "auto") -> Row:
    """Fingerprint and sign one model (the slow part): its catalogue row, not yet written."""
    from tensorguard.fingerprints import fingerprint_source
    from tensorguard.signatures import compute_signature, retrieval_vector
    from tensorguard.summary import summarize

    with opened(model, base=base, name=name) as source:
        summary = to_jsonable(summarize(source))
        fp = fingerprint_source(source, samples=samples, device=device)
        sig = compute_signature(source)
        digest = header_hash(source)
        # an open source is recorded by its files: its folder for several, else the file
        where = (Path(model) if not isinstance(model, ModelSource)
                 else source.root if len(source.shards) > 1 else source.shards[0])
        tokens, vector = retrieval_vector(sig)
        location = source.origin or str(where.resolve())  # a remote model: pinned to its commit
        return Row(source.name, normalise_labels(labels), location, digest, summary,
                   fp.to_dict(), features_blob(fp), sig.to_bytes(), tokens, vector.tobytes(), now())


def fingerprint_row(fp: Fingerprint, labels: Mapping[str, str], added_at: str) -> Row:
    """A fingerprint-only row."""
    return Row(fp.model_name, normalise_labels(labels), None, None, None, fp.to_dict(),
               features_blob(fp), None, None, None, added_at)


def label_of(found: Label | None) -> dict[str, str]:
    """A ``labels.csv`` line as catalogue labels."""
    if found is None:
        return {}
    return {"base": found.base_model, **({"family": found.family} if found.family else {})}


def entry_of(row: Row) -> Entry:
    fp = parse_fingerprint(row.fingerprint, Path(row.name)) if row.fingerprint else None
    origin = Origin.MODEL if row.signature_bytes is not None else Origin.FINGERPRINT
    return Entry(row.name, origin, row.labels, row.path, row.header_hash, row.architecture, fp,
                 row.signature_bytes, row.added_at)


@cache
def builtin_entries() -> tuple[Entry, ...]:
    """The bundled published fingerprints, labelled from their ``labels.csv`` (read-only)."""
    directory = bundled_dir()
    labels = load_labels(directory / LABELS_FILE)
    return tuple(Entry(fp.model_name, Origin.BUILTIN, label_of(labels.get(fp.model_name)), None, None,
                       None, fp, None, None) for fp in load_fingerprints([directory]))
