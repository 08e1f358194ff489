"""Fingerprints of the synthetic models, pinned: a refactor must not change a single byte of them.

The digests were taken before the architecture registry replaced the role regexes and the
hand-written generators; they cover every naming scheme, GQA with tied embeddings, and bf16.
Only ``tensorguard_version`` is left out of the digest, so a release does not break the pin.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tensorguard.fingerprints import fingerprint
from tensorguard.synthetic import ModelSpec, make_weights, save_model

SPECS = {
    "llama": ModelSpec(layers=3),
    "llamagqa": ModelSpec(hidden=128, heads=8, kv_heads=2, layers=2, intermediate=344, tied=True),
    "gpt2": ModelSpec("gpt2", layers=3),
    "neox": ModelSpec("neox", layers=2),
    "bert": ModelSpec("bert", layers=3),
    "t5": ModelSpec("t5", layers=2),
}
PINNED = {
    "llama": "f6fea8d938ba5d4c37d51de2e62a67e37e330942a8d7ea9d0d6d75ee3a3a2ff0",
    "llamagqa": "6a180fd84a8962a3f408544247a49944c5642768e497b8371c4d786c5c446197",
    "gpt2": "da2506d520381aa3f48e19bd1057fac9be7e5abad20d1d3b3dc68e51d7a06d67",
    "neox": "69819f9ffbe42647e3a55502994729573cc80fa72ff2bf1af17adcc7bac6d0d9",
    "bert": "e291ece193fe6dc197bcb186cd0ef511c7dd91dffee944b1e42fbb9e65b52843",
    "t5": "22297dab47dec347f65c04ec5d2bef4e8b21318ed400fa3dfaad86531944212f",
}


def digest(path: Path) -> str:
    data = fingerprint(path, device="cpu").to_dict()
    data.pop("tensorguard_version", None)
    return hashlib.sha256(json.dumps(data, indent=2).encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fingerprint_bytes_are_pinned(tmp_path: Path, name: str) -> None:
    dtype = torch.bfloat16 if name == "llamagqa" else torch.float32
    path = save_model(make_weights(SPECS[name], 3), tmp_path / f"{name}.safetensors", dtype=dtype)
    assert digest(path) == PINNED[name]
