"""The Hub stand-in started for a test, with the environment pointed at it (nothing else is
contacted), and tiny models in every layout the remote reader must handle."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tensorguard.loading import remote
from tensorguard.synthetic import ModelSpec, make_weights, save_lora_adapter, save_model
from tensorguard.testing.gguf_write import save_gguf
from tensorguard.testing.hub_server import HubServer

TOKEN = "hf_secret_token_1234567890"
SPEC = ModelSpec(scheme="llama", hidden=64, layers=2, intermediate=128, vocab=96, heads=4, kv_heads=2)


@contextmanager
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> Iterator[HubServer]:
    """A started stand-in Hub; ``HF_ENDPOINT`` points at it, the mirror is under ``tmp_path``,
    no token is set, and retries wait 10 ms."""
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH", "TENSORGUARD_REMOTE_CACHE_GB"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("TENSORGUARD_REMOTE_CACHE", str(tmp_path / "mirror"))
    monkeypatch.setattr(remote, "BACKOFF_S", 0.01)
    with HubServer(token=TOKEN, **kw) as hub:  # type: ignore[arg-type]
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def build_layouts(root: Path) -> dict[str, Path]:
    """One tiny Llama-shaped model saved in every layout; name -> the local folder or file."""
    weights = make_weights(SPEC, seed=3)
    config = {"model_type": "llama", "num_attention_heads": 4, "num_key_value_heads": 2}
    out: dict[str, Path] = {}
    for name, kw in (("directory", {}), ("indexed", {"shards": 3}),
                     ("shards", {"shards": 2, "index": False})):
        folder = save_model(weights, root / name / "tiny", **kw)  # type: ignore[arg-type]
        (folder / "config.json").write_text(json.dumps(config))
        out[name] = folder
    out["file"] = save_model(weights, root / "file" / "tiny" / "model.safetensors", dtype=torch.bfloat16)
    out["gguf"] = save_gguf(weights, root / "gguf" / "tiny" / "tiny.gguf", arch="llama", heads=4, kv_heads=2)
    split = save_gguf(weights, root / "split" / "tiny" / "tiny.gguf", arch="llama", heads=4,
                      kv_heads=2, split_max_tensors=8)
    out["split"] = split.parent
    packed = root / "packed" / "tiny"
    packed.mkdir(parents=True)
    fp8: dict[str, torch.Tensor] = {}
    for n, w in weights.items():
        if w.ndim == 2 and "proj" in n:  # FP8 codes with one scale per 32 x 32 block
            grid = w.abs().reshape(w.shape[0] // 32, 32, w.shape[1] // 32, 32).amax((1, 3)) / 448
            scales = grid.repeat_interleave(32, 0).repeat_interleave(32, 1)
            fp8[n] = (w / scales).to(torch.float8_e4m3fn)
            fp8[n.removesuffix("weight") + "weight_scale_inv"] = grid
        else:
            fp8[n] = w
    save_file(fp8, str(packed / "model.safetensors"))
    (packed / "config.json").write_text(json.dumps({**config, "quantization_config": {
        "quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [32, 32]}}))
    out["packed"] = packed
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, generator=gen), torch.randn(32, 4, generator=gen)
    prefix = "base_model.model.model.layers.0.self_attn.k_proj."
    out["lora"] = save_lora_adapter(root / "lora" / "tiny-lora", {prefix + "lora_A.weight": a,
                                                                  prefix + "lora_B.weight": b},
                                    r=4, lora_alpha=8)
    return out


def repo_folder(path: Path) -> Path:
    """The folder served as the repository of a layout (a file's folder)."""
    return path if path.is_dir() else path.parent


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
