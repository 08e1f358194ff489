"""``scan``: which known model is this one derived from, if any?

1. **Retrieve** (``retrieval``). The model's weight signature is computed over ``QUERY_BLOCKS``
   blocks at evenly spaced depths (the first and the last: among those the confirming
   independence test probes, so a remote model's blocks are fetched once for both). Every
   catalogue row with a signature is scored on the compact retrieval vector; the best
   ``SHORTLIST`` are compared on the full signature (the query's blocks aligned in order with
   the row's, as a model with fewer blocks is).
2. **Confirm.** For the best ``confirm`` signature matches whose weights are still at their
   recorded path with the recorded header hash, ``compare``'s weight signals run (the weight
   evidence and the permutation-robust independence test, with its p-value), and its verdict
   is kept.
   **Fingerprint, only where it can matter.** A confirmed match answers ``derived``, which no
   fingerprint can change: the paper fingerprint (which reads the whole token embedding) is then
   not computed, fingerprint-only rows are not ranked, and ``skipped`` says so. Otherwise it is
   computed, fingerprint-only rows (imported files, the built-in published set) get the
   standardised fingerprint distance, and the confirmations get the fingerprint distance too.
3. **Answer**, the first that applies:

   * ``derived``: a signature match that ``compare`` confirms (``derived`` or ``same weights``);
   * ``closest known``: a signature match that was not confirmed (weights gone or changed, or
     ``compare`` not convinced: the reason is given), else a fingerprint-only row closer than the
     fingerprint threshold (the fingerprint alone never says derived);
   * ``no known base``.

A *signature match* is a similarity of at least ``SIGNATURE_THRESHOLD`` (0.3), calibrated on the
lineage corpus (``python benchmarks/lineage.py --real``; the README has the figures): with every
block, every derivative scored at least 0.582 against its base (fine-tunes short and long, LoRA, quantization
in several formats, pruning, removed blocks, vocabulary extension, casts, the permutation,
rescaling and rotation attacks, merges) and every pair of independently trained models at most
0.099. The threshold sits in that gap, nearer the independent side, because a false match only
costs a ``compare`` run (which must then confirm it) while a missed one is lost. The fingerprint
threshold is the 5th percentile of the distances between different-family pairs of the reference
set. With the query's signature over 2 blocks, every derivative of the tiny corpus still scores at
least 0.624 against its base and every other base at most 0.108, and every ``scan`` answer of the
corpus is unchanged (``docs/remote.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tensorguard.catalogue.catalogue import Catalogue
from tensorguard.catalogue.entries import Origin, header_hash
from tensorguard.catalogue.retrieval import (
    SIGNATURE_THRESHOLD,
    Candidate,
    Confirmation,
    Evidence,
    Known,
    fingerprint_threshold,
    load_known,
    rank_signatures,
    with_fingerprint,
)
from tensorguard.catalogue.store import Row, Store
from tensorguard.enums import TextEnum
from tensorguard.errors import TensorguardError
from tensorguard.fingerprints import Fingerprint, fingerprint_source, parse_fingerprint
from tensorguard.lineage import Comparison, Context, Subject, confirm_subjects
from tensorguard.lineage.distance import load_reference
from tensorguard.loading import ModelInput, ModelSource, is_reference, open_model, opened
from tensorguard.signatures import Signature, compute_signature
from tensorguard.validation import whole_option

#: Blocks of the scanned model's weight signature (evenly spaced depths, the first and the last).
QUERY_BLOCKS = 2


class Answer(TextEnum):
    DERIVED = "derived"
    CLOSEST = "closest known"
    NONE = "no known base"


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
    base: str | None  # the entry named by the answer (None: no known base)
    base_labels: dict[str, str]
    summary: str  # the answer in one line, with its evidence
    candidates: tuple[Candidate, ...]
    catalogue: str
    rows: int  # entries scanned (file rows and built-in ones)
    thresholds: Thresholds
    skipped: tuple[str, ...] = ()  # steps not run, each with why

    def matches(self, policy: Mapping[str, str], *, unconfirmed: bool = False) -> bool:
        """Whether the answer names an entry carrying every ``key=value`` of ``policy``: a
        ``derived`` answer, or with ``unconfirmed`` also a ``closest known`` signature match."""
        named = self.answer is Answer.DERIVED or (
            unconfirmed and self.answer is Answer.CLOSEST
            and any(c.name == self.base and c.evidence is Evidence.SIGNATURE for c in self.candidates))
        return named and all(self.base_labels.get(k) == v for k, v in policy.items())


def _confirm(query: Subject, known: Known, i: int, context: Context, stored: Fingerprint | None,
             signature: Signature | None, measured: Comparison | None = None,
             ) -> tuple[Confirmation, Comparison | None]:
    """``compare``'s verdict between the catalogued model ``i`` and the query, if its weights are
    still where they were read, unchanged (``confirm_subjects``: reading only what decides it);
    with the comparison it rests on. ``stored``, ``signature``: the row's. ``measured``: an
    earlier comparison of the pair without the query's fingerprint, completed here with it."""
    path, recorded = known.paths[i], known.hashes[i]
    if path is None:
        return Confirmation(False, None, None, "no weights recorded (fingerprint only)"), None
    if not is_reference(path) and not Path(path).exists():
        return Confirmation(False, None, None, f"weights no longer at {path}"), None
    try:
        with open_model(path) as source:
            if recorded is not None and header_hash(source) != recorded:
                return Confirmation(False, None, None, f"{path} has changed since it was catalogued"), None
            fp = stored or (fingerprint_source(source) if query.fingerprint is not None else None)
            kept = {k: v for k, v in measured.evidence.items() if k != "fingerprint"} if measured else None
            if signature is not None:  # the row's own: not computed again from its weights
                context.signatures[source] = signature
            c = confirm_subjects(Subject(known.names[i], Path(path), fp, source), query, context, kept)
    except (TensorguardError, OSError, RuntimeError) as exc:  # an unreadable base fails its check only
        return Confirmation(False, None, None, f"compare failed: {exc}"), None
    test = c.independence
    log10_p = test.log10_p if test is not None and test.applicable else None
    return Confirmation(True, c.verdict.label.value, c.verdict.p_value, c.verdict.reason, log10_p), c


def _answer(ranked: list[Candidate], thresholds: Thresholds) -> tuple[Answer, Candidate | None, str]:
    signature = [c for c in ranked if c.match and c.evidence is Evidence.SIGNATURE]
    for c in signature:
        if c.confirmation is not None and c.confirmation.confirmed:
            p = c.confirmation.p_text
            return (Answer.DERIVED, c, f"derived from {c.name} (signature {c.score:.3f}; compare: "
                    f"{c.confirmation.verdict}{', ' + p if p else ''})")
    if signature:
        c = signature[0]
        why = c.confirmation.reason if c.confirmation else "not checked"
        if c.confirmation is not None and c.confirmation.ran:
            why = f"compare says {c.confirmation.verdict}: {c.confirmation.reason}"
        return (Answer.CLOSEST, c, f"closest known: {c.name}, not confirmed (signature {c.score:.3f} "
                f">= {thresholds.signature}; {why})")
    fingerprint = [c for c in ranked if c.match and c.evidence is Evidence.FINGERPRINT]
    if fingerprint and thresholds.fingerprint is not None:
        c = fingerprint[0]
        return (Answer.CLOSEST, c, f"closest known: {c.name}, not confirmed (fingerprint distance "
                f"{c.fingerprint_distance:.3g} <= {thresholds.fingerprint:.3g}; fingerprint only)")
    best = ranked[0] if ranked else None
    detail = ""
    if best is not None and best.evidence is Evidence.SIGNATURE and best.score is not None:
        detail = f" (best signature similarity {best.score:.3f} < {thresholds.signature})"
    return Answer.NONE, None, "no known base" + detail


def scan(model: ModelInput, *, catalogue: Catalogue | str | Path | None = None, top: int = 5,
         confirm: int = 2, base: ModelInput | None = None, samples: int = 15, blocks: int = 4,
         device: str = "auto") -> ScanResult:
    """Which catalogued model is ``model`` derived from? ``derived from X`` (confirmed by
    ``compare``), ``closest known: X`` (not confirmed) or ``no known base``.

    Args:
        model: a path or an open ``ModelSource`` (``base``: the base of a LoRA adapter).
        catalogue: a ``Catalogue``, or the path of its file (default: the user's catalogue, with
            the built-in published fingerprints).
        top: candidates reported (the answer's own is always among them).
        confirm: signature matches whose weights ``compare`` checks, best first.
        samples, device: how the model is fingerprinted (only when no match is confirmed);
            blocks: MLP blocks the confirming independence test probes.

    Example::

        found = tensorguard.scan("./suspect", catalogue="catalogue.sqlite")
        print(found.answer, found.base, found.summary)
    """
    for option, value, least in (("top", top, 1), ("confirm", confirm, 0), ("samples", samples, 1),
                                 ("blocks", blocks, 1)):
        whole_option(option, value, least=least)
    cat = catalogue if isinstance(catalogue, Catalogue) else Catalogue(catalogue)
    reference = load_reference(None)
    thresholds = Thresholds(SIGNATURE_THRESHOLD, fingerprint_threshold(reference),
                            "signature similarity >= SIGNATURE_THRESHOLD (calibrated on the lineage "
                            "corpus); fingerprint distance <= 5th percentile of different-family pairs")
    with opened(model, base=base) as source, cat.open() as store:
        sig = compute_signature(source, blocks=QUERY_BLOCKS)
        known = load_known(store, builtin=cat.builtin)
        ranked = rank_signatures(sig, known, store)
        query = Subject(source.name, _where(model, source), None, source)
        context = Context(reference, blocks, {source: sig})  # compare reuses the query's signature
        index = {name: i for i, name in enumerate(known.names)}
        stored: dict[str, Fingerprint | None] = {}
        signatures: dict[str, Signature | None] = {}
        checked: dict[str, tuple[Confirmation, Comparison | None]] = {}
        for c in [c for c in ranked if c.match and c.evidence is Evidence.SIGNATURE][:confirm]:
            i = index[c.name]  # the best ``confirm`` signature matches, best first
            row = store.get(c.name) if known.origins[i] is Origin.MODEL else None
            stored[c.name] = _stored_fingerprint(store, row)
            signatures[c.name] = _stored_signature(store, row)
            checked[c.name] = _confirm(query, known, i, context, stored[c.name], signatures[c.name])
        skipped: tuple[str, ...] = ()
        if any(done.confirmed for done, _ in checked.values()):
            skipped = ("fingerprint (a confirmed match answers derived whatever it is; fingerprint-only "
                       "entries not ranked)",)
        else:  # the fingerprint can change the answer (a fingerprint-only row) or its reasons
            fp = fingerprint_source(source, samples=samples, device=device)
            ranked = with_fingerprint(ranked, fp, known, store, reference, thresholds.fingerprint)
            query = dataclasses.replace(query, fingerprint=fp)
            checked = {name: (_confirm(query, known, index[name], context, stored[name], signatures[name],
                                       measured)
                              if measured is not None else (done, None))
                       for name, (done, measured) in checked.items()}
        confirmed = [dataclasses.replace(c, confirmation=checked[c.name][0]) if c.name in checked else c
                     for c in ranked]
        name = source.name
        store.warn()
    answer, chosen, summary = _answer(confirmed, thresholds)
    shown = confirmed[:top]
    if chosen is not None and chosen not in shown:
        shown.append(chosen)
    where = source.origin or str(_where(model, source))
    return ScanResult(name, where, answer, chosen.name if chosen else None,
                      chosen.labels if chosen else {}, summary, tuple(shown), str(cat.path),
                      len(known.names), thresholds, skipped)


def _stored_fingerprint(store: Store, row: Row | None) -> Fingerprint | None:
    """A row's fingerprint (``None``: none, or unreadable, which is recorded as damage)."""
    if row is None or not row.fingerprint:
        return None
    try:
        return parse_fingerprint(row.fingerprint, Path(row.name))
    except TensorguardError as exc:
        store.record_damage(row.name, f"its fingerprint is unreadable ({str(exc).partition(': ')[2]})")
        return None


def _stored_signature(store: Store, row: Row | None) -> Signature | None:
    """A row's signature (``None``: none, or unreadable: ``compare`` then computes it)."""
    blob = store.signature(row.name) if row is not None else None
    try:
        return Signature.from_bytes(blob, row.name) if blob is not None and row is not None else None
    except TensorguardError:
        return None


def _where(model: ModelInput, source: ModelSource) -> Path:
    return source.root if isinstance(model, ModelSource) else Path(model)
