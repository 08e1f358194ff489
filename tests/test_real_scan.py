"""Opt-in (``pytest -m real``, ``make test-real``): ``index add`` and ``scan`` on SmolLM2-135M.

The shipped Q4_1 GGUF is catalogued; the same model re-quantized to Q8_0 must be found derived
from it (signature match confirmed by compare), and the catalogue entry must carry a signature
under 256 KB read through the GGUF's own vocabulary.
"""

from __future__ import annotations

import json

import pytest

from tensorguard.testing.gguf_write import Q, requantize
from test_real_model import timed

pytestmark = pytest.mark.real


def test_smollm2_is_found_in_the_catalogue(smollm2, run_cli, tmp_path):
    db = tmp_path / "cat.sqlite"
    added, add_s = timed(run_cli, "index", "add", smollm2, "--label", "licence=restricted", "--db", db,
                         "--device", "cpu", "--json", "-q")
    (entry,) = json.loads(added.out)
    assert entry["origin"] == "model" and entry["signature_bytes"] < 256 * 1024
    q8 = requantize(smollm2, tmp_path / "SmolLM2-135M-Instruct.Q8_0.gguf", Q.Q8_0)
    scanned = run_cli("scan", q8, "--db", db, "--device", "cpu", "--json", "-q", "--policy",
                      "licence=restricted")
    assert scanned.code == 3, scanned.err  # derived from an entry labelled licence=restricted
    result = json.loads(scanned.out)
    assert (result["answer"], result["base"]) == ("derived", smollm2.stem)
    best = result["candidates"][0]
    print(json.dumps({"index_add_s": round(add_s, 2), "signature_bytes": entry["signature_bytes"],
                      "signature": best["score"], "shared_tokens": best["parts"]["shared_tokens"],
                      "summary": result["summary"]}, indent=1))
