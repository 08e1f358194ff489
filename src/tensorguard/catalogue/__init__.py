"""The model catalogue: known models with labels, fingerprints and weight signatures (SQLite)."""

from tensorguard.catalogue.index import (
    KNOWN_LABELS,
    Entry,
    Origin,
    add_models,
    builtin_entries,
    header_hash,
    import_fingerprints,
    list_entries,
    parse_labels,
    remove_entry,
    show_entry,
)
from tensorguard.catalogue.store import SCHEMA_VERSION, Row, Store, default_db_path

__all__ = ["KNOWN_LABELS", "SCHEMA_VERSION", "Entry", "Origin", "Row", "Store", "add_models",
           "builtin_entries", "default_db_path", "header_hash", "import_fingerprints", "list_entries",
           "parse_labels", "remove_entry", "show_entry"]
