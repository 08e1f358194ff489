"""``tensorguard scan``: which known model is this one derived from, if any?

1. **Retrieve.** The model's weight signature (``tensorguard.signature``) and paper fingerprint
   are computed once. Every catalogue row with a signature is scored on the compact retrieval
   vector (embedding Gram over 64 hashed tokens; one matrix product per distinct token list,
   however many rows); the best ``SHORTLIST`` are then compared on the full signature (all
   blocks, aligned). Fingerprint-only rows (``index import``, the built-in published set) get the
   standardised fingerprint distance.
2. **Confirm.** For the best ``confirm`` signature matches whose weights are still at their
   recorded path with the recorded ``header_hash``, the full ``compare`` runs (weight evidence and
   the permutation-robust independence test, with its p-value).
3. **Answer**, the first that applies:
   * ``derived``: a signature match that ``compare`` confirms (verdict ``derived`` or ``same weights``);
   * ``closest known``: a signature match that was not confirmed (weights gone or changed,
     compare inconclusive or refuting: the reason is given), else a fingerprint-only row closer
     than ``fingerprint_threshold`` (the fingerprint alone never says derived);
   * ``no known base``.

A *signature match* is a similarity of at least ``SIGNATURE_THRESHOLD``. It was calibrated on the
lineage corpus (``python benchmarks/lineage.py``, README): every derivative (fine-tunes short and
long, LoRA, quantization, pruning, removed blocks, vocabulary extension, casts, the permutation,
rescaling and rotation attacks, merges) scored at least 0.582 against its base, and every pair of
independently trained models (different seeds, same or different text) at most 0.099; the
threshold is the gap's midpoint (0.340) rounded down, since a false match only costs a
``compare`` run while a missed one is lost. The fingerprint threshold
is the 5th percentile of the distances between different-family pairs of the reference set.

Exit codes for CI (``policy_exit_code``): 3 when a scanned model is ``derived`` from an entry
whose labels include every ``key=value`` of the policy (default ``licence=restricted``; with
``unconfirmed=True`` a ``closest known`` signature match counts too), else 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from tensorguard.catalogue.index import Origin, builtin_entries, header_hash
from tensorguard.catalogue.store import Store
from tensorguard.compare.distance import Reference, load_reference
from tensorguard.errors import TensorguardError
from tensorguard.features import FEATURE_KEYS, Fingerprint
from tensorguard.loading import open_model
from tensorguard.signature import (
    Signature,
    SignatureSimilarity,
    compute_signature,
    retrieval_vector,
    similarity,
    unit,
)

SIGNATURE_THRESHOLD = 0.3
SHORTLIST = 32
FINGERPRINT_QUANTILE = 0.05
POLICY_EXIT_CODE = 3
DEFAULT_POLICY = {"licence": "restricted"}


class Answer(str, Enum):
    DERIVED = "derived"
    CLOSEST = "closest known"
    NONE = "no known base"


@dataclass(frozen=True)
class Confirmation:
    """What the confirm step did for one candidate; ``verdict`` is compare's label when it ran."""

    ran: bool
    verdict: str | None
    p_value: float | None
    reason: str

    @property
    def confirmed(self) -> bool:
        return self.verdict in ("derived", "same weights")


@dataclass(frozen=True)
class Candidate:
    """One catalogue entry ranked against the scanned model."""

    name: str
    origin: str
    labels: dict[str, str]
    evidence: str  # signature | fingerprint
    score: float | None  # full signature similarity (shortlisted signature rows)
    retrieval: float | None  # retrieval-vector correlation (every signature row)
    parts: SignatureSimilarity | None
    fingerprint_distance: float | None
    match: bool
    confirmation: Confirmation | None = None


@dataclass(frozen=True)
class Thresholds:
    signature: float
    fingerprint: float | None
    rule: str


@dataclass(frozen=True)
class ScanResult:
    """The answer for one model, with the candidates it rests on (best first)."""

    model: str
    path: str
    answer: Answer
    base: str | None
    base_labels: dict[str, str]
    summary: str
    candidates: tuple[Candidate, ...]
    catalogue: str
    rows: int
    thresholds: Thresholds
    seconds: dict[str, float]


# ---- the catalogue as arrays

@dataclass
class _Known:
    """Every row's light columns; signatures are read only for the shortlist."""

    names: list[str]
    origins: list[str]
    labels: list[dict[str, str]]
    paths: list[str | None]
    hashes: list[str | None]
    fingerprints: np.ndarray  # (rows, 14), NaN where absent
    groups: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]  # tokens -> (row ids, vectors)


def _load(store: Store, builtin: bool) -> _Known:
    names: list[str] = []
    origins: list[str] = []
    labels: list[dict[str, str]] = []
    paths: list[str | None] = []
    hashes: list[str | None] = []
    fps: list[np.ndarray | None] = []
    by_tokens: dict[str, tuple[list[int], list[bytes]]] = {}  # token list JSON -> rows
    columns = ("name", "labels", "path", "header_hash", "features", "retrieval_tokens", "retrieval")
    for name, lab, path, digest, features, tokens, vector in store.rows(columns):
        if vector is not None:
            ids, vecs = by_tokens.setdefault(tokens, ([], []))
            ids.append(len(names))
            vecs.append(vector)
        names.append(name)
        origins.append(Origin.MODEL if vector is not None else Origin.FINGERPRINT)
        labels.append(json.loads(lab))
        paths.append(path)
        hashes.append(digest)
        fps.append(np.frombuffer(features, dtype="<f8") if features else None)
    if builtin:
        seen = set(names)
        for e in builtin_entries():
            if e.name not in seen and e.fingerprint is not None:
                names.append(e.name)
                origins.append(Origin.BUILTIN)
                labels.append(e.labels)
                paths.append(None)
                hashes.append(None)
                fps.append(e.fingerprint.vector())
    nan = np.full(len(FEATURE_KEYS), np.nan)
    matrix = np.array([nan if f is None else f for f in fps]).reshape(len(names), len(FEATURE_KEYS))
    groups = {tuple(json.loads(t)): (np.array(ids),
                                     np.frombuffer(b"".join(v), dtype=np.float16).reshape(len(ids), -1))
              for t, (ids, v) in by_tokens.items()}
    return _Known(names, origins, labels, paths, hashes, matrix, groups)


def retrieval_scores(sig: Signature, groups: Mapping[tuple[str, ...], tuple[np.ndarray, np.ndarray]],
                     rows: int) -> np.ndarray:
    """Correlation of the query's retrieval vector with every row's (NaN: no vector, too few
    shared tokens). Rows sharing the query's token list are one matrix-vector product; other
    token lists are restricted to the shared tokens first."""
    tokens, vector = retrieval_vector(sig)
    out = np.full(rows, np.nan)
    for row_tokens, (ids, vectors) in groups.items():
        if row_tokens == tokens:
            out[ids] = vectors.astype(np.float32) @ vector.astype(np.float32)
            continue
        where = {t: i for i, t in enumerate(row_tokens)}
        qa = [i for i, t in enumerate(tokens) if t in where]
        if len(qa) < 8:
            continue
        ra = [where[tokens[i]] for i in qa]
        # the shared pairs' positions in each triangle: a gather, no matrix is rebuilt
        q_idx, r_idx = _pair_index(qa, len(tokens)), _pair_index(ra, len(row_tokens))
        out[ids] = unit(vectors[:, r_idx]) @ unit(vector[q_idx])
    return out


def _pair_index(order: list[int], n: int) -> np.ndarray:
    """Positions in an n x n upper triangle (row-major) of the pairs of ``order`` (a < b)."""
    a, b = np.triu_indices(len(order), 1)
    i, j = np.asarray(order)[a], np.asarray(order)[b]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo * n - lo * (lo + 1) // 2 + (hi - lo - 1)


def fingerprint_threshold(reference: Reference) -> float | None:
    """``FINGERPRINT_QUANTILE`` of the reference's different-family pair distances."""
    if not reference.different_family.size:
        return None
    return float(np.quantile(reference.different_family, FINGERPRINT_QUANTILE))


# ---- scan

def _confirm(query: Path, path: str | None, recorded: str | None, options: object) -> Confirmation:
    from tensorguard.compare import compare_models

    if path is None:
        return Confirmation(False, None, None, "no weights recorded (fingerprint only)")
    if not Path(path).exists():
        return Confirmation(False, None, None, f"weights no longer at {path}")
    try:
        with open_model(path) as source:
            if recorded is not None and header_hash(source) != recorded:
                return Confirmation(False, None, None, f"{path} has changed since it was catalogued")
        c = compare_models(path, query, options)  # type: ignore[arg-type]
    except TensorguardError as exc:
        return Confirmation(False, None, None, f"compare failed: {exc}")
    return Confirmation(True, c.verdict.label, c.verdict.p_value, c.verdict.reason)


def _rank(c: Candidate) -> tuple:
    """Signature matches, fingerprint matches, then the rest; best first within each."""
    tier = (0 if c.evidence == "signature" else 1) if c.match else (2 if c.evidence == "signature" else 3)
    value = (-(c.score if c.score is not None else (c.retrieval if c.retrieval is not None else -2))
             if c.evidence == "signature" else (c.fingerprint_distance or np.inf))
    return tier, value, c.name


def _answer(ranked: list[Candidate], thresholds: Thresholds) -> tuple[Answer, Candidate | None, str]:
    sig_matches = [c for c in ranked if c.match and c.evidence == "signature"]
    for c in sig_matches:
        if c.confirmation is not None and c.confirmation.confirmed:
            p = c.confirmation.p_value
            ptext = f", p = {p:.2g}" if p is not None else ""
            return (Answer.DERIVED, c, f"derived from {c.name} (signature {c.score:.3f}; compare: "
                    f"{c.confirmation.verdict}{ptext})")
    if sig_matches:
        c = sig_matches[0]
        why = c.confirmation.reason if c.confirmation else "not checked"
        if c.confirmation is not None and c.confirmation.ran:
            why = f"compare says {c.confirmation.verdict}: {c.confirmation.reason}"
        return (Answer.CLOSEST, c, f"closest known: {c.name}, not confirmed (signature {c.score:.3f} "
                f">= {thresholds.signature}; {why})")
    fp_matches = [c for c in ranked if c.match and c.evidence == "fingerprint"]
    if fp_matches:
        c = fp_matches[0]
        return (Answer.CLOSEST, c, f"closest known: {c.name}, not confirmed (fingerprint distance "
                f"{c.fingerprint_distance:.3g} <= {thresholds.fingerprint:.3g}; fingerprint only)")
    best = ranked[0] if ranked else None
    detail = ""
    if best is not None and best.evidence == "signature" and best.score is not None:
        detail = f" (best signature similarity {best.score:.3f} < {thresholds.signature})"
    return Answer.NONE, None, "no known base" + detail


def scan_model(model: str | Path, *, db: str | Path | None = None, top: int = 5, confirm: int = 2,
               builtin: bool = True, base: str | Path | None = None, num_samples: int = 15,
               device: str = "auto", compare_options: object | None = None) -> ScanResult:
    """Scan one model against the catalogue ``db`` (default file; plus the built-in entries)."""
    from tensorguard.compare import Options
    from tensorguard.fingerprint import fingerprint_model

    if top < 1:
        raise TensorguardError(f"--top {top}: must be at least 1")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with open_model(model, base=base) as source:
        name = source.name
        fp = fingerprint_model(source, num_samples=num_samples, device=device)
        sig = compute_signature(source)
    seconds["measure"] = time.perf_counter() - start
    reference = load_reference(None)
    thresholds = Thresholds(SIGNATURE_THRESHOLD, fingerprint_threshold(reference),
                            "signature >= SIGNATURE_THRESHOLD (calibrated on the lineage corpus); "
                            "fingerprint distance <= 5th percentile of different-family pairs")
    with Store.open(db) as store:
        start = time.perf_counter()
        known = _load(store, builtin)
        ranked = rank_candidates(sig, fp, known, store, reference, thresholds.fingerprint)
        seconds["retrieve"] = time.perf_counter() - start
    start = time.perf_counter()
    options = compare_options or Options(num_samples=num_samples, device=device)
    confirmed: list[Candidate] = []
    budget = confirm
    for c in ranked:
        if budget > 0 and c.match and c.evidence == "signature":
            budget -= 1
            i = known.names.index(c.name)
            c = _with(c, _confirm(Path(model), known.paths[i], known.hashes[i], options))
        confirmed.append(c)
    seconds["confirm"] = time.perf_counter() - start
    answer, chosen, summary = _answer(confirmed, thresholds)
    shown = confirmed[:top]
    if chosen is not None and chosen not in shown:
        shown.append(chosen)
    return ScanResult(name, str(model), answer, chosen.name if chosen else None,
                      chosen.labels if chosen else {}, summary, tuple(shown), str(store.path),
                      len(known.names), thresholds, seconds)


def _with(c: Candidate, confirmation: Confirmation) -> Candidate:
    from dataclasses import replace

    return replace(c, confirmation=confirmation)


def rank_candidates(sig: Signature, fp: Fingerprint, known: _Known, store: Store,
                    reference: Reference, fingerprint_limit: float | None,
                    keep: int = SHORTLIST) -> list[Candidate]:
    """Retrieval over every row (arrays), the full signature comparison for the ``SHORTLIST``
    best, fingerprint distances (standardised by ``reference``) for every row with a fingerprint.
    Returned, best first: the shortlist, every fingerprint row within ``fingerprint_limit``, and
    the ``keep`` nearest other fingerprint rows (the rest cannot be shown or answer)."""
    rows = len(known.names)
    retrieval = retrieval_scores(sig, known.groups, rows)
    distances = np.linalg.norm((known.fingerprints - fp.vector()) / reference.scale, axis=1)
    has_sig = np.array([o == Origin.MODEL for o in known.origins], dtype=bool)
    order = np.argsort(np.where(np.isfinite(retrieval), -retrieval, np.inf), kind="stable")
    shortlist = [int(i) for i in order[:SHORTLIST] if np.isfinite(retrieval[i])]
    fp_rows = np.flatnonzero(~has_sig & np.isfinite(distances))
    nearest = fp_rows[np.argsort(distances[fp_rows], kind="stable")]
    within = nearest[distances[nearest] <= (fingerprint_limit if fingerprint_limit is not None else -1.0)]
    chosen = list(dict.fromkeys([*shortlist, *map(int, within), *map(int, nearest[:keep])]))
    candidates = []
    for i in chosen:
        parts = None
        if has_sig[i] and (blob := store.signature(known.names[i])) is not None:
            parts = similarity(sig, Signature.from_bytes(blob, known.names[i]))
        score = parts.score if parts is not None else None
        distance = float(distances[i]) if np.isfinite(distances[i]) else None
        match = (score is not None and score >= SIGNATURE_THRESHOLD) if has_sig[i] else (
            distance is not None and fingerprint_limit is not None and distance <= fingerprint_limit)
        candidates.append(Candidate(
            known.names[i], known.origins[i], known.labels[i], "signature" if has_sig[i] else "fingerprint",
            score, float(retrieval[i]) if np.isfinite(retrieval[i]) else None, parts, distance, match))
    return sorted(candidates, key=_rank)


def scan_models(models: Sequence[str | Path], **options: object) -> list[ScanResult]:
    """``scan_model`` for each model (same options)."""
    return [scan_model(m, **options) for m in models]  # type: ignore[arg-type]


def policy_exit_code(results: Sequence[ScanResult], *, policy: Mapping[str, str] | None = None,
                     unconfirmed: bool = False) -> int:
    """``POLICY_EXIT_CODE`` (3) when a result is derived from (or, with ``unconfirmed``, a
    signature match of) an entry carrying every ``key=value`` of ``policy``; else 0."""
    policy = DEFAULT_POLICY if policy is None else policy
    for r in results:
        hit = r.answer is Answer.DERIVED or (
            unconfirmed and r.answer is Answer.CLOSEST
            and any(c.name == r.base and c.evidence == "signature" for c in r.candidates))
        if hit and all(r.base_labels.get(k) == v for k, v in policy.items()):
            return POLICY_EXIT_CODE
    return 0
