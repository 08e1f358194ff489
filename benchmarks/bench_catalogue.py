"""The catalogue's row checks at scale: ``index list`` and ``index repair`` on a catalogue of about
20,000 fingerprint rows (the 43 bundled fingerprints, copied under new names), against reading
every row with ``sqlite3`` alone (no decoding, no checks).

``list`` decodes and checks every row (JSON labels and documents, blob sizes, finite features) and
parses its fingerprint; ``repair`` does the same plus every signature. The catalogue is built once
in the workdir, independently of the benchmark model.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from benchmarks.common import TENSORGUARD, Case

GROUP = "catalogue"
COPIES = 455  # x 43 rows
_READ_ROWS = """
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = con.execute("SELECT * FROM models m LEFT JOIN signatures s ON s.name = m.name").fetchall()
"""


def build(path: Path) -> Path:
    """The bundled fingerprints imported, then copied ``COPIES`` times under new names."""
    if path.exists():
        return path
    from tensorguard.catalogue import Catalogue
    from tensorguard.reference import bundled_dir

    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    Catalogue(partial, builtin=False).import_fingerprints([bundled_dir()])
    with sqlite3.connect(partial) as con:
        columns = ("path, header_hash, features, tokens, retrieval, labels, architecture, fingerprint, "
                   "added_at")
        for k in range(COPIES):
            con.execute(f"INSERT INTO models (name, {columns}) SELECT name || ?, {columns} FROM models "
                        "WHERE name NOT LIKE '%#%'", (f"#{k}",))
    partial.replace(path)
    return path


def cases(model: Path, workdir: Path) -> list[Case]:
    db = str(build(workdir / "catalogue-20k.sqlite"))
    return [Case(GROUP, "sqlite3: read every row (no checks)", [sys.executable, "-c", _READ_ROWS, db],
                 baseline=True),
            Case(GROUP, "tensorguard index list --no-builtin --json",
                 [*TENSORGUARD, "index", "list", "--db", db, "--no-builtin", "--json"]),
            Case(GROUP, "tensorguard index repair", [*TENSORGUARD, "index", "repair", "--db", db])]
