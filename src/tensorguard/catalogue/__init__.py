"""The model catalogue and ``scan``: known models (labels, fingerprints, weight signatures) in an
SQLite file plus the built-in published fingerprints, and the look-up of a new model in them.

``store`` is the file, ``entries`` what a row holds (and how one is measured), ``catalogue`` the
``Catalogue`` handle, ``packs`` the signature packs (a catalogue in one checked file),
``retrieval`` the vectorised ranking of every row, ``sketches`` its index, ``scanning`` the
``scan`` verb (retrieve, confirm with ``compare``, answer).
"""

from tensorguard.catalogue.catalogue import Catalogue, PackImport
from tensorguard.catalogue.entries import (
    KNOWN_LABELS,
    Entry,
    Origin,
    builtin_entries,
    header_hash,
    normalise_labels,
    parse_labels,
)
from tensorguard.catalogue.packs import PACK_VERSION, PackInfo, is_pack, read_pack
from tensorguard.catalogue.retrieval import (
    FINGERPRINT_QUANTILE,
    SHORTLIST,
    SIGNATURE_THRESHOLD,
    Candidate,
    Confirmation,
    Evidence,
)
from tensorguard.catalogue.scanning import Answer, ScanResult, Thresholds, scan
from tensorguard.catalogue.store import (
    ENVIRONMENT,
    SCHEMA_VERSION,
    CatalogueBusyError,
    Damage,
    Row,
    Store,
    default_db_path,
)

__all__ = ["ENVIRONMENT", "FINGERPRINT_QUANTILE", "KNOWN_LABELS", "PACK_VERSION", "SCHEMA_VERSION",
           "SHORTLIST", "SIGNATURE_THRESHOLD", "Answer", "Candidate", "Catalogue", "CatalogueBusyError",
           "Confirmation", "Damage", "Entry", "Evidence", "Origin", "PackImport", "PackInfo", "Row",
           "ScanResult", "Store", "Thresholds", "builtin_entries", "default_db_path", "header_hash",
           "is_pack", "normalise_labels", "parse_labels", "read_pack", "scan"]
