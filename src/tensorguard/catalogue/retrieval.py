"""The retrieve step of ``scan``: every catalogue row scored at once, then the best few in full.

Every row's light columns are read into arrays once (``Known``). Where the file has a usable
retrieval index (``store``, ``sketches``), each block of sketches bounds its rows' scores with one
matrix-vector product; the rows that can be among the ``SHORTLIST`` best are then scored exactly
from their vectors (``indexed_scores``), so the shortlist and its scores are the exhaustive
search's. Otherwise (no index, a stale one, or a query that too many rows come close to) the
retrieval vectors are streamed from the file ``CHUNK_ROWS`` rows at a time, so memory stays
bounded however large the catalogue. Within a chunk the vectors of the rows that share a token
list are one contiguous float32 matrix, so their scores are one matrix-vector product; rows of
another token list are compared over the shared tokens by sums (no matrix is rebuilt).
Fingerprint distances are one vectorised norm over a ``(rows, 14)`` array. Only the
``SHORTLIST`` best signature rows are read and compared in full (``signatures.similarity``,
every block), and only the rows that can be shown or answer become ``Candidate`` objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tensorguard.catalogue.entries import Origin, builtin_entries
from tensorguard.catalogue.sketches import Estimates, bounds
from tensorguard.catalogue.store import Store
from tensorguard.enums import TextEnum
from tensorguard.errors import TensorguardError
from tensorguard.fingerprints import FEATURE_KEYS, Fingerprint
from tensorguard.lineage.distance import Reference
from tensorguard.lineage.verdict import format_p
from tensorguard.signatures import MIN_TOKENS, Comparer, Signature, SignatureSimilarity, retrieval_vector

#: Signature rows compared in full after the retrieval pass.
SHORTLIST = 32
#: A signature similarity at least this high is a match (calibration: ``scanning``'s docstring).
SIGNATURE_THRESHOLD = 0.3
#: Fingerprint-only rows within this quantile of the reference's different-family distances match.
FINGERPRINT_QUANTILE = 0.05


class Evidence(TextEnum):
    """What a candidate was ranked on."""

    SIGNATURE = "signature"
    FINGERPRINT = "fingerprint"


@dataclass(frozen=True)
class Confirmation:
    """What the confirm step did for one candidate; ``verdict`` is ``compare``'s when it ran."""

    ran: bool
    verdict: str | None
    p_value: float | None
    reason: str
    log10_p: float | None = None  # the independence test's, where ``p_value`` underflows to 0

    @property
    def confirmed(self) -> bool:
        return self.verdict in ("derived", "same weights")

    @property
    def p_text(self) -> str:
        """``p = 3.1e-12``, ``p < 1e-300``, or ``""`` without a test."""
        if self.log10_p is not None:
            return format_p(self.log10_p)
        return f"p = {self.p_value:.2g}" if self.p_value is not None else ""


@dataclass(frozen=True)
class Candidate:
    """One catalogue entry ranked against the scanned model."""

    name: str
    origin: Origin
    labels: dict[str, str]
    evidence: Evidence
    score: float | None  # full signature similarity (shortlisted signature rows)
    retrieval: float | None  # retrieval-vector correlation (every signature row)
    parts: SignatureSimilarity | None
    fingerprint_distance: float | None
    match: bool
    confirmation: Confirmation | None = None


@dataclass(frozen=True)
class Known:
    """Every row's light columns as arrays (file rows first, then the built-in ones); the
    retrieval vectors stay in the file until ``stream_scores`` reads them chunk by chunk."""

    names: list[str]
    origins: list[Origin]
    paths: list[str | None]
    hashes: list[str | None]
    features: np.ndarray  # (rows, 14) float64, NaN where a row has no complete fingerprint
    builtin_labels: dict[str, dict[str, str]]
    rowids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # -1: built-in

    @property
    def signed(self) -> np.ndarray:
        return np.array([o is Origin.MODEL for o in self.origins], dtype=bool)


_NO_FEATURES = np.full(len(FEATURE_KEYS), np.nan).astype("<f8").tobytes()
#: Rows whose retrieval vectors are read and scored together: the retrieve step's memory is
#: bounded by this many 4 KB vectors (as float32: 8 KB each), whatever the catalogue's size.
CHUNK_ROWS = 8192
#: The indexed search first scores exactly this many times ``SHORTLIST`` rows, best by sketch.
FIRST_PASS = 4
#: When more than this share of the indexed rows could still be among the best (a query close to
#: many rows, or to none), every vector is streamed instead.
MAX_RESCORED = 0.25


def load_known(store: Store, *, builtin: bool) -> Known:
    """Read every row's light columns but the retrieval vectors (one query) into arrays."""
    light = store.light(vectors=False)
    names = list(light.names)
    origins = [Origin.MODEL if r is not None else Origin.FINGERPRINT for r in light.retrieval]
    paths, hashes = list(light.paths), list(light.hashes)
    rowids = list(light.rowids)
    features = [f or _NO_FEATURES for f in light.features]
    labels: dict[str, dict[str, str]] = {}
    if builtin:
        seen = set(names)
        for e in builtin_entries():
            if e.name not in seen and e.fingerprint is not None:
                names.append(e.name)
                origins.append(Origin.BUILTIN)
                paths.append(None)
                hashes.append(None)
                rowids.append(-1)
                features.append(e.fingerprint.vector().astype("<f8").tobytes())
                labels[e.name] = e.labels
    matrix = np.frombuffer(b"".join(features), dtype="<f8").reshape(len(names), len(FEATURE_KEYS))
    return Known(names, origins, paths, hashes, matrix, labels, np.asarray(rowids, dtype=np.int64))


Groups = dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]  # tokens -> (row ids, float32 vectors)


def vector_groups(ids: np.ndarray, token_ids: list[int | None], blobs: list[bytes | None],
                  lists: Mapping[int, tuple[str, ...]]) -> Groups:
    """Rows ``ids`` (with their token-list ids and float16 vectors) grouped by token list: each
    group's vectors one contiguous float32 matrix."""
    groups: Groups = {}
    for list_id in sorted({t for t, b in zip(token_ids, blobs, strict=True) if t is not None and b}):
        where = [k for k, (t, b) in enumerate(zip(token_ids, blobs, strict=True)) if t == list_id and b]
        blob = b"".join(blobs[k] or b"" for k in where)
        vectors = np.frombuffer(blob, dtype="<f2").reshape(len(where), -1).astype(np.float32)
        groups[lists[list_id]] = (ids[where], vectors)
    return groups


def stream_scores(sig: Signature, store: Store, known: Known, chunk: int | None = None) -> np.ndarray:
    """``retrieval_scores`` over every file row, read ``chunk`` (default ``CHUNK_ROWS``) rows at a time."""
    out = np.full(len(known.names), np.nan)
    query = retrieval_vector(sig)
    lists = store.token_lists()
    start = 0
    for batch in store.vector_chunks(chunk or CHUNK_ROWS):
        if [name for name, _, _ in batch] != known.names[start:start + len(batch)]:
            raise TensorguardError(f"{store.path}: the catalogue changed while it was scanned; scan again")
        ids = np.arange(start, start + len(batch))
        _score_rows(query, store, known, ids, [t for _, t, _ in batch], [v for _, _, v in batch], lists, out)
        start += len(batch)
    return out


def _score_rows(query: tuple[tuple[str, ...], np.ndarray], store: Store, known: Known, ids: np.ndarray,
                token_ids: list[int | None], blobs: list[bytes | None], lists: Mapping[int, tuple[str, ...]],
                out: np.ndarray) -> None:
    """Score the rows ``ids`` exactly from their vectors into ``out`` (a non-finite vector: NaN,
    recorded as damage)."""
    groups = vector_groups(ids, token_ids, blobs, lists)
    for rows, vectors in groups.values():
        bad = ~np.isfinite(vectors).all(axis=1)
        vectors[bad] = np.nan  # damaged: scored NaN, never shortlisted
        for i in rows[bad]:
            store.record_damage(known.names[i], "its retrieval vector holds values that are not finite")
    _score(query, groups, out)


def _score_exact(query: tuple[tuple[str, ...], np.ndarray], store: Store, known: Known,
                 rows: Sequence[int], lists: Mapping[int, tuple[str, ...]], out: np.ndarray) -> None:
    """Read the vectors of the rows ``rows`` (indices of ``known``) by rowid and score them."""
    if not len(rows):
        return
    where = {int(known.rowids[i]): int(i) for i in rows}
    found = store.vectors(list(where))
    if len(found) != len(where) or any(known.names[where[r]] != name for r, name, _, _ in found):
        raise TensorguardError(f"{store.path}: the catalogue changed while it was scanned; scan again")
    ids = np.asarray([where[r] for r, _, _, _ in found], dtype=np.int64)
    _score_rows(query, store, known, ids, [t for _, _, t, _ in found], [v for _, _, _, v in found],
                lists, out)


def indexed_scores(sig: Signature, store: Store, known: Known, keep: int = SHORTLIST) -> np.ndarray | None:
    """``stream_scores``' exact score for every row that can be among the ``keep`` best (ties
    included), NaN for the rows the index rules out; ``None`` when the index cannot answer (no
    usable index, fewer than ``keep`` rows with a score, or more than ``MAX_RESCORED`` of the rows
    could be among the best).

    Every block's bounds are one product (``sketches.bounds``). The ``FIRST_PASS * keep`` rows
    with the best estimates, and every signed row the index lacks, are scored exactly; ``t`` is
    the ``keep``-th best of those scores, a lower bound of the ``keep``-th best of all. Every other
    row whose upper bound reaches ``t`` is then scored exactly: a row the index rules out scores
    below ``t``, so it cannot be among the ``keep`` best."""
    blocks = store.sketch_blocks()
    if blocks is None or len(known.rowids) != len(known.names):
        return None
    query = retrieval_vector(sig)
    tokens, vector = query[0], query[1].astype(np.float32)
    lists = store.token_lists()
    rows = len(known.names)
    files = np.flatnonzero(known.rowids >= 0)
    order = files[np.argsort(known.rowids[files], kind="stable")]
    ordered = known.rowids[order]
    estimate = np.full(rows, -np.inf)
    covered = np.zeros(rows, dtype=bool)
    found: list[tuple[np.ndarray, Estimates]] = []
    spaces: dict[int, tuple[np.ndarray, np.ndarray | None] | None] = {}
    for block in blocks:
        at = np.minimum(np.searchsorted(ordered, block.rowids), max(len(ordered) - 1, 0))
        hit = ordered[at] == block.rowids if len(ordered) else np.zeros(len(block), dtype=bool)
        if not hit.any() or block.tokens not in lists:
            continue
        if block.tokens not in spaces:
            spaces[block.tokens] = _query_space(tokens, vector, lists[block.tokens])
        space = spaces[block.tokens]
        index = order[at[hit]]
        covered[index] = True
        if space is not None:  # else too few shared tokens: NaN in the exhaustive search too
            estimates = bounds(block.take(hit), *space)
            estimate[index] = estimates.estimate
            found.append((index, estimates))
    out = np.full(rows, np.nan)
    first = np.flatnonzero(covered)
    first = first[np.argsort(-estimate[first], kind="stable")[:FIRST_PASS * keep]]
    first = first[estimate[first] > -np.inf]
    _score_exact(query, store, known, [*np.flatnonzero(known.signed & ~covered), *first], lists, out)
    best = np.sort(out[np.isfinite(out)])[::-1]
    if len(best) < keep:
        return None
    reach = np.zeros(rows, dtype=bool)
    for index, estimates in found:
        reach[index] = estimates.may_reach(float(best[keep - 1]))
    rest = np.flatnonzero(reach)
    rest = rest[~np.isin(rest, first)]
    if len(rest) > MAX_RESCORED * max(int(covered.sum()), 1):
        return None
    _score_exact(query, store, known, list(rest), lists, out)
    return out


def _query_space(tokens: tuple[str, ...], vector: np.ndarray,
                 row_tokens: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The query in a token list's pair space, for ``sketches.bounds``: the vector itself (same
    tokens), or its shared pairs centred with the mask of the list's unshared tokens; ``None``
    when fewer than ``MIN_TOKENS`` tokens are shared."""
    if row_tokens == tokens:
        return vector, None
    where = {t: i for i, t in enumerate(row_tokens)}
    qa = [i for i, t in enumerate(tokens) if t in where]
    if len(qa) < MIN_TOKENS:
        return None
    mine = np.asarray([where[tokens[i]] for i in qa])
    shared = vector[_pair_index(np.asarray(qa), len(tokens))]
    x = np.zeros(len(row_tokens) * (len(row_tokens) - 1) // 2, dtype=np.float32)
    x[_pair_index(mine, len(row_tokens))] = shared - shared.mean()
    unshared = np.ones(len(row_tokens), dtype=bool)
    unshared[mine] = False
    return x, unshared


def _pair_index(order: np.ndarray, n: int) -> np.ndarray:
    """Positions in an n x n upper triangle (row-major) of the pairs of ``order`` (a < b)."""
    a, b = np.triu_indices(len(order), 1)
    i, j = order[a], order[b]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    out: np.ndarray = lo * n - lo * (lo + 1) // 2 + (hi - lo - 1)
    return out


def retrieval_scores(sig: Signature, groups: Mapping[tuple[str, ...], tuple[np.ndarray, np.ndarray]],
                     rows: int) -> np.ndarray:
    """Correlation of the query's retrieval vector with every row's (NaN: no vector, or fewer than
    ``MIN_TOKENS`` shared tokens)."""
    out = np.full(rows, np.nan)
    _score(retrieval_vector(sig), groups, out)
    return out


def _score(query_vector: tuple[tuple[str, ...], np.ndarray],
           groups: Mapping[tuple[str, ...], tuple[np.ndarray, np.ndarray]], out: np.ndarray) -> None:
    """Write the scores of the rows of ``groups`` into ``out``."""
    tokens, vector = query_vector
    query = vector.astype(np.float32)
    for row_tokens, (ids, vectors) in groups.items():
        if row_tokens == tokens:  # the common case: one matrix-vector product
            out[ids] = vectors @ query
            continue
        where = {t: i for i, t in enumerate(row_tokens)}
        qa = [i for i, t in enumerate(tokens) if t in where]
        if len(qa) >= MIN_TOKENS:
            shared = _pair_index(np.asarray([where[tokens[i]] for i in qa]), len(row_tokens))
            out[ids] = _subset_correlation(vectors, shared, query[_pair_index(np.asarray(qa), len(tokens))])


def _subset_correlation(vectors: np.ndarray, positions: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row's entries at ``positions`` with ``query``, from sums taken
    by matrix-vector products (no row is gathered): ``(Σvq - n v̄ q̄) / (|v - v̄| |q - q̄|)``."""
    n = len(positions)
    mask = np.zeros(vectors.shape[1], dtype=np.float32)
    mask[positions] = 1.0
    placed = np.zeros(vectors.shape[1], dtype=np.float32)
    placed[positions] = query
    sums, squares = vectors @ mask, np.square(vectors) @ mask
    spread = np.sqrt(np.maximum(squares - sums * sums / n, 1e-24))
    centred = query - query.mean()
    out: np.ndarray = (vectors @ placed - sums * query.mean()) / (spread * np.linalg.norm(centred))
    return out


def fingerprint_threshold(reference: Reference) -> float | None:
    """``FINGERPRINT_QUANTILE`` of the reference's different-family pair distances."""
    if not reference.different_family.size:
        return None
    return float(np.quantile(reference.different_family, FINGERPRINT_QUANTILE))


def _rank_key(c: Candidate) -> tuple[int, float, str]:
    """Signature matches, fingerprint matches, then the rest; best first within each."""
    signature = c.evidence is Evidence.SIGNATURE
    tier = (0 if signature else 1) if c.match else (2 if signature else 3)
    if signature:
        value = -(c.score if c.score is not None else c.retrieval if c.retrieval is not None else -2.0)
    else:
        value = c.fingerprint_distance if c.fingerprint_distance is not None else np.inf
    return tier, value, c.name


def rank_candidates(sig: Signature, fp: Fingerprint | None, known: Known, store: Store,
                    reference: Reference, fingerprint_limit: float | None,
                    keep: int = SHORTLIST) -> list[Candidate]:
    """Retrieval over every row, the full signature comparison for the ``SHORTLIST`` best, and
    fingerprint distances (standardised by ``reference``) for every row with a fingerprint.
    Returned, best first: the shortlist, every fingerprint row within ``fingerprint_limit``, and
    the ``keep`` nearest other fingerprint rows (the rest can neither be shown nor answer).
    Without ``fp``, the shortlist alone (``with_fingerprint`` adds the rest later)."""
    ranked = rank_signatures(sig, known, store)
    return ranked if fp is None else with_fingerprint(ranked, fp, known, store, reference,
                                                      fingerprint_limit, keep)


def rank_signatures(sig: Signature, known: Known, store: Store) -> list[Candidate]:
    """Retrieval over every row and the full signature comparison for the ``SHORTLIST`` best,
    best first (no fingerprint distances)."""
    retrieval = indexed_scores(sig, store, known)
    if retrieval is None:
        retrieval = stream_scores(sig, store, known)
    order = np.argsort(np.where(np.isfinite(retrieval), -retrieval, np.inf), kind="stable")
    shortlist = [int(i) for i in order[:SHORTLIST] if np.isfinite(retrieval[i])]
    labels = {**store.labels([known.names[i] for i in shortlist]), **known.builtin_labels}
    comparer = Comparer(sig)
    signed = known.signed
    candidates = []
    for i in shortlist:
        name = known.names[i]
        parts = None
        if signed[i] and (blob := store.signature(name)) is not None:
            try:
                parts = comparer.similarity(Signature.from_bytes(blob, name))
            except TensorguardError as exc:  # a damaged row: said, and the others go on
                store.record_damage(name, str(exc).partition(": ")[2])
        score = parts.score if parts is not None else None
        candidates.append(Candidate(
            name, known.origins[i], labels.get(name, {}),
            Evidence.SIGNATURE if signed[i] else Evidence.FINGERPRINT, score, float(retrieval[i]), parts,
            None, bool(signed[i]) and score is not None and score >= SIGNATURE_THRESHOLD))
    return sorted(candidates, key=_rank_key)


def with_fingerprint(ranked: list[Candidate], fp: Fingerprint, known: Known, store: Store,
                     reference: Reference, fingerprint_limit: float | None,
                     keep: int = SHORTLIST) -> list[Candidate]:
    """``rank_signatures``'s candidates with their fingerprint distances, and the fingerprint rows
    (those within ``fingerprint_limit`` and the ``keep`` nearest others), best first."""
    try:
        query = fp.vector()
    except TensorguardError:  # a model without every feature: fingerprint rows cannot be ranked
        query = np.full(len(FEATURE_KEYS), np.nan)
    distances = np.linalg.norm((known.features - query) / reference.scale, axis=1)
    index = {name: i for i, name in enumerate(known.names)}

    def distance(i: int) -> float | None:
        return float(distances[i]) if np.isfinite(distances[i]) else None

    fp_rows = np.flatnonzero(~known.signed & np.isfinite(distances))
    nearest = fp_rows[np.argsort(distances[fp_rows], kind="stable")]
    limit = fingerprint_limit if fingerprint_limit is not None else -1.0
    within = nearest[distances[nearest] <= limit]
    shown = {c.name for c in ranked}
    chosen = [i for i in dict.fromkeys([*map(int, within), *map(int, nearest[:keep])])
              if known.names[i] not in shown]
    labels = {**store.labels([known.names[i] for i in chosen]), **known.builtin_labels}
    candidates = [dataclasses.replace(c, fingerprint_distance=distance(index[c.name])) for c in ranked]
    for i in chosen:
        name, d = known.names[i], distance(i)
        candidates.append(Candidate(name, known.origins[i], labels.get(name, {}), Evidence.FINGERPRINT,
                                    None, None, None, d, d is not None and d <= limit))
    return sorted(candidates, key=_rank_key)
