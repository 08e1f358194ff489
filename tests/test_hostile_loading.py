"""Hostile and malformed model files: every case a one-line error naming the file (or setting) and
the problem, exit code 2 (1 only for a batch where some models failed), never a hang, a traceback
or an internal error.

Each class of the hostile-input issue has a test here: safetensors headers the library itself would
refuse, deep JSON, absurd part counts, empty matrices, LoRA configs, FIFOs and devices, index
confinement, GGUF and packed-format structure; then seeded fuzz corpora (byte flips, field
overwrites and truncations) of a tiny GGUF, a GPTQ folder and a LoRA adapter, each case run through
``inspect`` and ``fingerprint`` in-process under an alarm.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFValueType
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tensorguard.errors import TensorguardError
from tensorguard.loading import open_model
from tensorguard.loading.layouts import MAX_PARTS
from tensorguard.synthetic import ModelSpec, make_weights, save_lora_adapter, save_model
from tensorguard.testing.gguf_write import save_gguf
from test_hostile import FUZZ, clean_failure, corruptions
from test_packed import GPTQ, NAME, K, N, checkpoint, gptq_tensors

SPEC = ModelSpec(layers=1, hidden=16, intermediate=32, vocab=24, heads=2)
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def entry(start: int, stop: int, shape: list | None = None, dtype: str = "F32") -> dict:
    return {"dtype": dtype, "shape": shape or [(stop - start) // 4], "data_offsets": [start, stop]}


def refused(call, *args, match: str, **kwargs) -> str:
    """``call(*args)`` raises a one-line TensorguardError matching ``match``; its message."""
    with pytest.raises(TensorguardError, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- safetensors headers the library itself refuses --------------------------------------------

A16, B16 = entry(0, 16), entry(16, 32)
HEADERS = [  # (id, header bytes or dict, data size, message)
    ("same range", {"a": A16, "b": entry(0, 16)}, 16, r"tensor 'b' \(data_offsets \[0, 16\]\) "
     r"overlaps tensor 'a' \(data_offsets \[0, 16\]\)"),
    ("overlap", {"a": A16, "b": entry(8, 24)}, 24, r"'b' \(data_offsets \[8, 24\]\) overlaps"),
    ("gap", {"a": A16, "b": entry(20, 36)}, 36, "bytes 16-20 of the data section belong to no tensor"),
    ("gap first", {"a": entry(8, 24)}, 24, "bytes 0-8 .* belong to no tensor"),
    ("trailing bytes", {"a": A16}, 20, r"4 trailing bytes after the last tensor \(the tensors end at "
     r"16, the data section is 20 bytes\)"),
    ("duplicate name", b'{"a": ' + json.dumps(A16).encode() + b', "a": ' + json.dumps(B16).encode()
     + b"}", 32, "'a' appears twice"),
    ("duplicate of a non-entry", b'{"a": 5, "a": ' + json.dumps(A16).encode() + b"}", 16,
     "'a' appears twice"),
    ("duplicate field", b'{"a": {"dtype": "F32", "dtype": "F16", "shape": [4], "data_offsets": [0, 16]}}',
     16, "'dtype' appears twice"),
    ("metadata a list", {"__metadata__": ["x"], "a": A16}, 16, "__metadata__ is a list"),
    ("metadata number", {"__metadata__": {"format": 3}, "a": A16}, 16,
     "__metadata__ value of 'format' is a int"),
    ("bool in shape", {"a": entry(0, 4, [True])}, 4, r"bad shape \[true\]"),
    ("bool offsets", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [False, 4]}}, 4,
     "bad data_offsets"),
    ("float in shape", {"a": entry(0, 16, [4.0])}, 16, "bad shape"),
    ("dtype a list", {"a": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, 16,
     r"unsupported dtype \[\"F32\"\]"),
    ("overflowing shape", {"a": entry(0, 0, [1 << 40, 1 << 40, 0])}, 0, "too large to exist"),
    ("deep nesting", b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 0, "nested too deeply"),
    ("utf-16", '{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'.encode("utf-16-le"),
     16, "not valid JSON"),  # json.loads would have read it as UTF-16
    ("latin-1", b'{"\xe9": ' + json.dumps(A16).encode() + b"}", 16, "not UTF-8 text"),
    ("lone surrogate", b'{"\\ud800": ' + json.dumps(A16).encode() + b"}", 16, "not valid Unicode"),
    ("entry a list", {"a": [1, 2]}, 0, "not an entry with dtype, shape and data_offsets"),
    ("5000-digit number", b'{"a": {"dtype": "F32", "shape": [' + b"1" * 5000 + b'], "data_offsets": [0, 4]}}',
     4, "a number too long to read"),
]


@pytest.mark.parametrize(("header", "size", "message"), [h[1:] for h in HEADERS],
                         ids=[h[0] for h in HEADERS])
def test_headers_safetensors_would_refuse(tmp_path, run_cli, header, size, message):
    path = raw_safetensors(tmp_path / "bad.safetensors", header, bytes(size))
    refused(open_model, path, match=message)
    err = clean_failure(run_cli, "inspect", path)
    assert str(path) in err
    with pytest.raises(SafetensorError):  # the library refuses it too: tensorguard's check comes first
        safe_open(str(path), framework="pt")


def test_a_valid_header_with_odd_but_legal_parts_is_accepted(tmp_path):
    header = {"__metadata__": None, "z": entry(0, 0, [0, 3]), "a": A16, "b": B16,
              "e": entry(32, 32, [2, 0]), 'a "name": with quotes': entry(32, 36)}
    spaced = json.dumps(header, separators=(" , ", " : ")).encode()  # legal JSON, unusual spacing
    path = raw_safetensors(tmp_path / "ok.safetensors", spaced, bytes(36))
    with safe_open(str(path), framework="pt") as library:
        assert set(library.keys()) == set(header) - {"__metadata__"}
    refused(open_model, path, match="no 2-D floating-point weight tensors")  # all 1-D or empty


def test_one_bad_model_in_a_batch_fails_that_model_only(tmp_path, run_cli):
    good = save_model(make_weights(SPEC, 0), tmp_path / "good.safetensors")
    bad = raw_safetensors(tmp_path / "bad.safetensors", {"a": A16, "b": entry(0, 16)}, bytes(16))
    result = run_cli("fingerprint", good, bad, "-o", tmp_path / "out", "--samples", "1")
    assert result.code == 1, result.err
    assert "internal error" not in result.err and "overlaps" in result.err and "bad.safetensors" in result.err
    assert (tmp_path / "out" / "good_features.json").exists()


# --- deep JSON, absurd counts ---------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_index_adapter_config_and_config(tmp_path, run_cli):
    model = save_model(make_weights(SPEC, 0), tmp_path / "m", shards=2, index=True)
    (model / "model.safetensors.index.json").write_text('{"weight_map": ' + DEEP + "}")
    assert "nested too deeply" in clean_failure(run_cli, "inspect", model)
    base = save_model(make_weights(SPEC, 0), tmp_path / "base.safetensors")
    adapter = lora_adapter(tmp_path / "lora")
    (adapter / "adapter_config.json").write_text('{"r": 4, "x": ' + DEEP + "}")
    err = clean_failure(run_cli, "fingerprint", adapter, "--base", base, "--json", "--samples", "1")
    assert "adapter_config.json" in err and "nested too deeply" in err
    plain = save_model(make_weights(SPEC, 0), tmp_path / "plain")
    for config in (DEEP, "[" + "9" * 5000 + "]"):  # a plain model does not need its config
        (plain / "config.json").write_text(config)
        clean_failure(run_cli, "inspect", plain, codes=(0,))
    (model / "model.safetensors.index.json").write_text('{"weight_map": {"a": ' + "1" * 5000 + "}}")
    assert "a number too long to read" in clean_failure(run_cli, "inspect", model)


def test_absurd_part_counts(tmp_path, run_cli):
    shard = save_model(make_weights(SPEC, 0), tmp_path / "m-00001-of-99999999999.safetensors")
    assert "claims 99999999999 parts; at most" in clean_failure(run_cli, "inspect", shard)
    gguf = tmp_path / "g" / "x-00001-of-99999999999.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert "claims 99999999999 parts" in clean_failure(run_cli, "inspect", gguf)
    index = tmp_path / "idx" / "model.safetensors.index.json"
    index.parent.mkdir()
    index.write_text(json.dumps({"weight_map": {f"t{i}": f"s{i}.safetensors" for i in range(MAX_PARTS + 1)}}))
    err = clean_failure(run_cli, "inspect", index.parent)
    assert f"names {MAX_PARTS + 1} shards" in err and "model.safetensors.index.json" in err


# --- numbers ---------------------------------------------------------------------------------------

def test_empty_matrices_are_not_weights(tmp_path, run_cli):
    weights = make_weights(SPEC, 0)
    weights |= {"x.rows.weight": torch.zeros(0, 16), "x.cols.weight": torch.zeros(16, 0)}
    with open_model(save_model(weights, tmp_path / "z.safetensors")) as src:
        names = {m.name for m in src.matrices()}
        assert "x.rows.weight" not in names and "x.cols.weight" not in names
        assert src.total_params == sum(w.numel() for w in weights.values())
    only = save_model({"e.weight": torch.zeros(0, 4), "n.weight": torch.ones(4)},
                      tmp_path / "only.safetensors")
    err = clean_failure(run_cli, "inspect", only)
    assert f"{only}: no 2-D floating-point weight tensors" in err  # the file, not its directory


# --- LoRA configs ------------------------------------------------------------------------------------

def lora_adapter(root: Path, a: torch.Tensor | None = None, **config: object) -> Path:
    module = "base_model.model.model.layers.0.self_attn.q_proj"
    a = torch.randn(4, 16) if a is None else a
    tensors = {module + ".lora_A.weight": a, module + ".lora_B.weight": torch.randn(16, 4)}
    return save_lora_adapter(root, tensors, **{"r": 4, "lora_alpha": 8, **config})


NAN = float("nan")
LORA_CONFIGS = [  # (config changes, message)
    ({"r": 0}, "r is 0: must be an integer of at least 1"),
    ({"r": -4}, "r is -4"),
    ({"r": "4"}, "r is '4'"),
    ({"r": NAN}, "r is nan"),
    ({"r": True}, "r is True"),
    ({"r": 0, "use_rslora": True}, "r is 0"),
    ({"lora_alpha": None}, "lora_alpha is None: must be a finite number"),
    ({"lora_alpha": "8"}, "lora_alpha is '8'"),
    ({"lora_alpha": float("inf")}, "lora_alpha is inf"),
    ({"rank_pattern": ["q_proj"]}, "rank_pattern is \\['q_proj'\\]: must be a map"),
    ({"rank_pattern": {"(": 4}}, "rank_pattern key '\\(' is not a valid regular expression"),
    ({"rank_pattern": {"(a+)+b": 4}}, "nested or repeated quantifiers"),
    ({"rank_pattern": {".*.*.*x": 4}}, "nested or repeated quantifiers"),
    ({"rank_pattern": {"a?" * 12 + "b": 4}}, "nested or repeated quantifiers"),
    ({"rank_pattern": {"q_proj": 0}}, "rank_pattern\\['q_proj'\\] is 0"),
    ({"alpha_pattern": {"q_proj": "x"}}, "alpha_pattern\\['q_proj'\\] is 'x'"),
    ({"use_rslora": "yes"}, "use_rslora is 'yes': must be true or false"),
    ({"peft_type": ["LORA"]}, "\\['LORA'\\] adapters are not supported"),
    ({"r": 8}, "has rank 4, but adapter_config.json says r = 8"),
    ({"rank_pattern": {"layers\\.0\\.self_attn\\.q_proj": 2}}, "has rank 4, but .* says r = 2"),
]


@pytest.mark.parametrize(("config", "message"), LORA_CONFIGS, ids=[m[:30] for _, m in LORA_CONFIGS])
def test_bad_lora_configs(tmp_path, run_cli, config, message):
    base = save_model(make_weights(SPEC, 0), tmp_path / "base.safetensors")
    adapter = lora_adapter(tmp_path / "lora", **config)
    err = clean_failure(run_cli, "fingerprint", adapter, "--base", base, "--json", "--samples", "1")
    assert refused(open_model, adapter, base=base, match=message) in err


@pytest.mark.parametrize("a", [torch.tensor(1.0), torch.randn(4)], ids=["0-D", "1-D"])
def test_lora_matrices_of_the_wrong_rank(tmp_path, run_cli, a):
    base = save_model(make_weights(SPEC, 0), tmp_path / "base.safetensors")
    adapter = lora_adapter(tmp_path / "lora", a=a)
    assert "does not fit base tensor" in clean_failure(run_cli, "fingerprint", adapter, "--base", base,
                                                       "--json", "--samples", "1")


def test_lora_patterns_as_peft_reads_them(tmp_path):
    base = save_model(make_weights(SPEC, 0), tmp_path / "base.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    plain = open_model(base).read(q)
    patterns = ({"q_proj": 4}, {"layers\\.\\d+\\.self_attn\\.q_proj": 4}, {"(?:q|k)_proj": 4})
    for i, pattern in enumerate(patterns):
        adapter = lora_adapter(tmp_path / f"lora{i}", r=2, rank_pattern=pattern, alpha_pattern={"q_proj": 2})
        with open_model(adapter, base=base) as src:
            lora = src.deltas[q]
            assert lora.scale == 0.5  # alpha 2 over the pattern's rank 4
            assert not torch.equal(src.read(q), plain)


# --- files that are not regular files ------------------------------------------------------------------

@needs_fifo
def test_fifos_devices_and_sockets_are_refused_up_front(tmp_path, run_cli, monkeypatch):
    weights = make_weights(SPEC, 0)
    monkeypatch.chdir(tmp_path)  # a short socket name (AF_UNIX paths are limited to ~100 bytes)

    def fifo(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        return path

    # the model itself
    assert "FIFO" in clean_failure(run_cli, "inspect", fifo(tmp_path / "pipe.safetensors"))
    assert "FIFO" in clean_failure(run_cli, "inspect", fifo(tmp_path / "pipe.gguf"))
    for device in ("/dev/zero", "/dev/null"):
        if Path(device).exists():
            assert "character device" in clean_failure(run_cli, "inspect", device)
    sock = Path("s.safetensors")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock))
        assert "socket" in clean_failure(run_cli, "inspect", sock)
    # a file inside a model directory
    fifo(tmp_path / "d1" / "model.safetensors")
    shards = save_model(weights, tmp_path / "d2", shards=2, index=False)
    next(shards.glob("*-00002-of-00002.safetensors")).unlink()
    fifo(shards / "model-00002-of-00002.safetensors")
    indexed = save_model(weights, tmp_path / "d3", shards=2, index=True)
    (indexed / "model.safetensors.index.json").unlink()
    fifo(indexed / "model.safetensors.index.json")
    listed = save_model(weights, tmp_path / "d4", shards=2, index=True)
    (listed / "model-00001-of-00002.safetensors").unlink()
    fifo(listed / "model-00001-of-00002.safetensors")
    configured = save_model(weights, tmp_path / "d5")
    fifo(configured / "config.json")
    fifo(tmp_path / "d6" / "model.gguf")
    split = save_gguf(make_weights(ModelSpec(scheme="llama", hidden=32, layers=2, intermediate=64, vocab=32,
                                             heads=2), 0), tmp_path / "d7" / "m.gguf", arch="llama",
                      heads=2, split_max_tensors=6)
    last = sorted(split.parent.glob("*.gguf"))[-1]
    last.unlink()
    fifo(last)
    for model in ("d1", "d2", "d3", "d4", "d5", "d6", "d7"):
        err = clean_failure(run_cli, "inspect", tmp_path / model)
        assert "FIFO" in err, (model, err)
    base = save_model(weights, tmp_path / "base.safetensors")
    adapter = lora_adapter(tmp_path / "lora")
    (adapter / "adapter_config.json").unlink()
    fifo(adapter / "adapter_config.json")
    assert "FIFO" in clean_failure(run_cli, "fingerprint", adapter, "--base", base, "--json")
    weights_fifo = lora_adapter(tmp_path / "lora2")
    (weights_fifo / "adapter_model.safetensors").unlink()
    fifo(weights_fifo / "adapter_model.safetensors")
    assert "FIFO" in clean_failure(run_cli, "fingerprint", weights_fifo, "--base", base, "--json")


# --- index confinement ---------------------------------------------------------------------------------

def indexed_model(root: Path) -> tuple[Path, dict]:
    model = save_model(make_weights(SPEC, 0), root, shards=2, index=True)
    return model, json.loads((model / "model.safetensors.index.json").read_text())


@pytest.mark.parametrize("where", ["../outside/model.safetensors", "/etc/passwd", "absolute",
                                   "sub/../../outside/model.safetensors", ""])
def test_index_shards_outside_the_directory_are_refused(tmp_path, run_cli, where):
    outside = save_model(make_weights(SPEC, 0), tmp_path / "outside")  # a valid model next door
    model, index = indexed_model(tmp_path / "m")
    where = str(outside / "model.safetensors") if where == "absolute" else where
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = where
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    err = clean_failure(run_cli, "inspect", model)
    assert "model.safetensors.index.json" in err and "outside the model's directory" in err


def test_index_shards_in_subfolders_and_symlinks_are_read(tmp_path):
    """The rule is on the index's names: a subfolder is inside; a link the directory itself holds
    (as the Hugging Face cache links snapshots to blobs) is followed."""
    model, index = indexed_model(tmp_path / "m")
    (model / "sub").mkdir()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (model / "model-00001-of-00002.safetensors").rename(model / "sub" / "first.safetensors")
    (model / "model-00002-of-00002.safetensors").rename(blobs / "abc123")
    (model / "model-00002-of-00002.safetensors").symlink_to(blobs / "abc123")
    index["weight_map"] = {k: "sub/first.safetensors" if v.startswith("model-00001") else v
                           for k, v in index["weight_map"].items()}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with open_model(model) as src:
        assert len(src.shards) == 2 and len(src.matrices()) > 0


# --- GGUF structure ------------------------------------------------------------------------------------

def gguf_str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def kv(key: str, vtype: GGUFValueType, payload: bytes) -> bytes:
    return gguf_str(key) + struct.pack("<I", vtype) + payload


def u64(key: str, value: int) -> bytes:
    return kv(key, GGUFValueType.UINT64, struct.pack("<Q", value))


def text(key: str, value: str) -> bytes:
    return kv(key, GGUFValueType.STRING, gguf_str(value))


def gguf_bytes(metadata: list[bytes], tensors: list[tuple[str, tuple[int, ...], int, int]], data: bytes,
               tensor_count: int | None = None) -> bytes:
    """A GGUF v3 file: ``tensors`` as (name, GGUF dims (innermost first), type, offset)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if tensor_count is None else tensor_count,
                                len(metadata)) + b"".join(metadata)
    for name, dims, qtype, offset in tensors:
        out += gguf_str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        out += struct.pack("<IQ", qtype, offset)
    return out + bytes(-len(out) % 32) + data


F32 = GGMLQuantizationType.F32
EMBED = ("token_embd.weight", (8, 4), F32, 0)  # 4 x 8 float32: 128 bytes
LLAMA = text("general.architecture", "llama")
GGUFS = [  # (id, metadata, tensors, data, tensor count, message or None for exit 0)
    ("absurd tensor count", [LLAMA], [EMBED], bytes(128), 1 << 60, "cannot fit in"),
    ("absurd dims", [LLAMA], [("token_embd.weight", (1 << 40, 1 << 40), F32, 0)], bytes(128), None,
     "runs past the end of the file"),
    ("many dims", [LLAMA], [("token_embd.weight", (1,) * 9, F32, 0)], b"", None, "has 9 dimensions"),
    ("unknown type", [LLAMA], [("token_embd.weight", (8, 4), 9999, 0)], bytes(128), None,
     "unsupported tensor type 9999"),
    ("misaligned", [LLAMA], [("token_embd.weight", (8, 4), F32, 4)], bytes(160), None,
     "not a multiple of the alignment 32"),
    ("huge block_count", [LLAMA, u64("llama.block_count", 1 << 40)], [EMBED], bytes(128), None,
     "1099511627776 blocks"),
    ("huge block index", [LLAMA], [EMBED, ("blk.99999999999.attn_norm.weight", (8,), F32, 128)],
     bytes(160), None, "100000000000 blocks"),
    ("nested arrays", [LLAMA, gguf_str("deep") + struct.pack("<I", GGUFValueType.ARRAY)
                       + (struct.pack("<IQ", GGUFValueType.ARRAY, 1)) * 20
                       + struct.pack("<IQ", GGUFValueType.UINT8, 0)], [EMBED], bytes(128), None,
     "nests arrays more than 8 deep"),
    ("split.no a string", [LLAMA, text("split.no", "x")], [EMBED], bytes(128), None, "split.no 'x'"),
    ("unknown value type", [LLAMA, kv("odd", 77, b"")], [EMBED], bytes(128), None, "unknown value type 77"),
    ("huge base_model.count", [LLAMA, u64("general.base_model.count", 1 << 60)], [EMBED], bytes(128),
     None, None),
    ("zero-size tensor", [LLAMA], [EMBED, ("output.weight", (8, 0), F32, 128)], bytes(128), None, None),
]


@pytest.mark.parametrize(("metadata", "tensors", "data", "count", "message"), [g[1:] for g in GGUFS],
                         ids=[g[0] for g in GGUFS])
def test_gguf_structure(tmp_path, run_cli, metadata, tensors, data, count, message):
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes(metadata, tensors, data, count))
    for command in (("inspect", path, "--json"), ("fingerprint", path, "--json", "--samples", "1")):
        err = clean_failure(run_cli, *command, codes=(2,) if message else (0,))
        assert message is None or (message in err and str(path) in err), err
    if message is None:
        inspected = json.loads(run_cli("inspect", path, "--json").out)
        assert len(json.dumps(inspected)) < 10_000  # a claimed count is not a reason to print 2**60 claims


# --- packed formats ------------------------------------------------------------------------------------

def bnb_state(**state: object) -> torch.Tensor:
    settings = {"quant_type": "nf4", "blocksize": 64, "shape": [N, K]} | state
    return torch.tensor(list(json.dumps(settings).encode()), dtype=torch.uint8)


def bnb(**parts: torch.Tensor) -> dict[str, torch.Tensor]:
    tensors = {NAME + ".weight": torch.zeros(N * K // 2, 1, dtype=torch.uint8),
               NAME + ".weight.absmax": torch.ones(N * K // 64), NAME + ".weight.quant_map": torch.zeros(16),
               NAME + ".weight.quant_state.bitsandbytes__nf4": bnb_state()}
    return tensors | {NAME + ".weight" + k: v for k, v in parts.items()}


def ct(**parts: torch.Tensor) -> dict[str, torch.Tensor]:
    tensors = {NAME + ".weight_packed": torch.zeros(N, K // 8, dtype=torch.int32),
               NAME + ".weight_scale": torch.ones(N, K // 32, dtype=torch.float16),
               NAME + ".weight_shape": torch.tensor([N, K])}
    return tensors | {NAME + k: v for k, v in parts.items()}


def ct_config(**weights: object) -> dict:
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {
        "g": {"weights": {"type": "int", "num_bits": 4, "group_size": 32, "strategy": "group"} | weights}}}


MLX = {NAME + ".weight": torch.zeros(N, K // 8, dtype=torch.uint32),
       NAME + ".scales": torch.ones(N, K // 32, dtype=torch.float16),
       NAME + ".biases": torch.zeros(N, K // 32, dtype=torch.float16)}
FP8 = {NAME + ".weight": torch.zeros(N, K).to(torch.float8_e4m3fn),
       NAME + ".weight_scale_inv": torch.ones(1, 1)}
PACKED = [  # (id, tensors (or a function of the GPTQ tensors), quantization_config, extra config, message)
    ("gptq group_size string", None, GPTQ | {"group_size": "32"}, {}, "group_size is '32'"),
    ("gptq bits string", None, GPTQ | {"bits": "4"}, {}, "GPTQ with '4' bits is not supported"),
    ("gptq bits list", None, GPTQ | {"bits": [4]}, {}, "GPTQ with [4] bits"),
    ("gptq format list", None, GPTQ | {"checkpoint_format": ["gptq"]}, {}, "checkpoint_format ['gptq']"),
    ("gptq float zeros", lambda t: t | {NAME + ".qzeros": t[NAME + ".qzeros"].float()}, GPTQ, {},
     "'model.layers.0.mlp.down_proj.qzeros' is F32"),
    ("gptq float g_idx", lambda t: t | {NAME + ".g_idx": t[NAME + ".g_idx"].float()}, GPTQ, {},
     "g_idx' is F32"),
    ("gptq 1-D scales", lambda t: t | {NAME + ".scales": t[NAME + ".scales"].reshape(-1)}, GPTQ, {},
     "scales' is F16 [256], not"),
    ("awq group_size 0", {NAME + ".qweight": torch.zeros(K, N // 8, dtype=torch.int32),
                          NAME + ".qzeros": torch.zeros(2, N // 8, dtype=torch.int32),
                          NAME + ".scales": torch.ones(2, N, dtype=torch.float16)},
     {"quant_method": "awq", "group_size": 0}, {},
     "2 groups of scales for 128 inputs, but group_size is 128"),
    ("fp8 block zero", FP8 | {NAME + ".weight_scale_inv": torch.ones(1, 2)},
     {"quant_method": "fp8", "weight_block_size": [0, 128]}, {}, "block size [0, 128] in config.json"),
    ("fp8 block string", FP8 | {NAME + ".weight_scale_inv": torch.ones(1, 2)},
     {"quant_method": "fp8", "weight_block_size": "ab"}, {}, "block size 'ab'"),
    ("bnb state float", bnb(**{".quant_state.bitsandbytes__nf4": torch.zeros(4)}), None, {},
     "is not a quant state"),
    ("bnb state shape", bnb(**{".quant_state.bitsandbytes__nf4": bnb_state(shape=["a", "b"])}), None, {},
     "is not a 2-D nf4/fp4 quant state"),
    ("bnb blocksize 0", bnb(**{".quant_state.bitsandbytes__nf4": bnb_state(blocksize=0)}), None, {},
     "blocksize is 0"),
    ("bnb state not json", bnb(**{".quant_state.bitsandbytes__nf4": torch.tensor([1, 2, 255],
                                                                                dtype=torch.uint8)}),
     None, {}, "not a readable quant state"),
    ("bnb short quant_map", bnb(**{".quant_map": torch.zeros(4)}), None, {}, "has 4 entries for 16 codes"),
    ("bnb 2-D absmax", bnb(**{".absmax": torch.ones(N * K // 64, 1)}), None, {}, "absmax' is F32"),
    ("ct weight_shape of 3", ct(**{".weight_shape": torch.tensor([N, K, 1])}), ct_config(), {},
     "is not an (outputs, inputs) pair (it has 3 entries)"),
    ("ct negative shape", ct(**{".weight_shape": torch.tensor([-N, K])}), ct_config(), {}, "not an"),
    ("ct float shape", ct(**{".weight_shape": torch.tensor([1.5, 2.0])}), ct_config(), {},
     "weight_shape' is F32"),
    ("ct bits string", ct(), ct_config(num_bits="4"), {}, "compressed-tensors '4'-bit codes"),
    ("ct format list", ct(), ct_config() | {"format": ["pack-quantized"]}, {}, "1 distinct weight"),
    ("mlx bits string", MLX, None, {"quantization": {"bits": "4", "group_size": 32}}, "MLX 'affine' quan"),
    ("mlx group list", MLX, None, {"quantization": {"bits": 4, "group_size": [32]}}, "groups of [32]"),
    ("method a list", {NAME + ".weight": torch.zeros(N, K)}, {"quant_method": ["gptq"]}, {},
     "config.json says quant_method ['gptq']"),
]


@pytest.mark.parametrize(("tensors", "qconfig", "config", "message"), [p[1:] for p in PACKED],
                         ids=[p[0] for p in PACKED])
def test_packed_settings_and_parts(tmp_path, run_cli, tensors, qconfig, config, message):
    w = torch.randn(N, K) * 0.02
    if tensors is None or callable(tensors):
        tensors = gptq_tensors(w) if tensors is None else tensors(gptq_tensors(w))
    root = checkpoint(tmp_path / "m", tensors, qconfig, **config)
    for command in (("inspect", root, "--json"), ("fingerprint", root, "--json", "--samples", "1")):
        err = clean_failure(run_cli, *command)
        assert message in err and str(root) in err, err


# --- fuzz corpora: GGUF, a GPTQ folder, a LoRA adapter ---------------------------------------------

TINY = ModelSpec(scheme="llama", hidden=32, layers=1, intermediate=64, vocab=32, heads=2, kv_heads=1)
FUZZ_COMMANDS = (("inspect", "--json"), ("fingerprint", "--json", "--samples", "1"))


def binary_corruptions(data: bytes, count: int, seed: int, header_end: int) -> Iterator[tuple[str, bytes]]:
    """Seeded damage to a binary file: bit flips (mostly in its header), a little-endian field
    overwritten with an extreme value, and truncations."""
    rng = random.Random(FUZZ.seed(seed))
    extremes = (0, 1, 0xFF, 0xFFFF_FFFF, 1 << 31, 1 << 40, (1 << 63) - 1, (1 << 64) - 1)
    for i in range(FUZZ.cases(count)):
        buf = bytearray(data)
        how = i % 4
        if how == 0:
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(0, header_end)] ^= 1 << rng.randrange(8)
        elif how == 1:
            at, width = rng.randrange(0, header_end - 8), rng.choice((4, 8))
            buf[at:at + width] = (rng.choice(extremes) % (1 << 8 * width)).to_bytes(width, "little")
        elif how == 2:
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(0, len(buf))] ^= 1 << rng.randrange(8)
        else:
            buf = buf[:rng.randrange(0, len(buf))]
        yield f"{('flip', 'field', 'anywhere', 'cut')[how]} {i}", bytes(buf)


def text_corruptions(data: bytes, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """Seeded damage to a JSON file: a structural character or digit put in, or a truncation."""
    rng = random.Random(FUZZ.seed(seed))
    for i in range(FUZZ.cases(count)):
        buf = bytearray(data)
        if i % 3 == 2:
            buf = buf[:rng.randrange(0, len(buf))]
        else:
            buf[rng.randrange(len(buf))] = ord(rng.choice('{}[],:"0123456789-e.tn '))
        yield f"json {i}", bytes(buf)


def fuzz(run_cli, target: Path, model: Path, cases: Iterator[tuple[str, bytes]], *extra: object) -> int:
    """Write each case to ``target`` and run every fuzz command on ``model``; the number of cases."""
    n = 0
    for label, data in cases:
        target.write_bytes(data)
        for command in FUZZ_COMMANDS:
            try:
                clean_failure(run_cli, command[0], model, *command[1:], *extra, codes=(0, 2))
            except AssertionError as exc:
                raise AssertionError(f"{target.name}, {label}: {exc}") from None
        n += 1
    return n


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_fuzzed_gguf(tmp_path, run_cli):
    path = save_gguf(make_weights(TINY, 0), tmp_path / "src" / "m.gguf", arch="llama", heads=2, kv_heads=1,
                     types=lambda name, shape: GGMLQuantizationType.Q8_0 if "mlp" in name
                     else GGMLQuantizationType.F16)
    data = path.read_bytes()
    header_end = data.index(b"\x00" * 16, data.index(b"token_embd.weight"))  # padding before the data
    target = tmp_path / "fuzzed.gguf"
    assert fuzz(run_cli, target, target, binary_corruptions(data, 160, 0, header_end)) == FUZZ.cases(160)


def test_fuzzed_gptq_folder(tmp_path, run_cli):
    weights = make_weights(ModelSpec(scheme="llama", hidden=64, layers=1, intermediate=128, vocab=32,
                                     heads=2), 0)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        tensors |= gptq_tensors(tensor, name.removesuffix(".weight")) if name.endswith("_proj.weight") \
            else {name: tensor}
    root = tmp_path / "gptq"
    root.mkdir()
    save_file(tensors, str(root / "model.safetensors"))
    config = json.dumps({"quantization_config": GPTQ}).encode()
    (root / "config.json").write_bytes(config)
    data = (root / "model.safetensors").read_bytes()
    n = fuzz(run_cli, root / "model.safetensors", root, corruptions(data, 120, seed=3))
    (root / "model.safetensors").write_bytes(data)
    n += fuzz(run_cli, root / "config.json", root, text_corruptions(config, 60, seed=4))
    assert n == FUZZ.cases(180)


def test_fuzzed_lora_adapter(tmp_path, run_cli):
    base = save_model(make_weights(SPEC, 0), tmp_path / "base.safetensors")
    adapter = lora_adapter(tmp_path / "lora", rank_pattern={"q_proj": 4}, alpha_pattern={"q_proj": 8})
    config = (adapter / "adapter_config.json").read_bytes()
    n = fuzz(run_cli, adapter / "adapter_config.json", adapter, text_corruptions(config, 60, seed=5),
             "--base", base)
    (adapter / "adapter_config.json").write_bytes(config)
    data = (adapter / "adapter_model.safetensors").read_bytes()
    n += fuzz(run_cli, adapter / "adapter_model.safetensors", adapter, corruptions(data, 40, seed=6),
              "--base", base)
    assert n == FUZZ.cases(100)


def test_fuzzed_index(tmp_path, run_cli):
    model, _ = indexed_model(tmp_path / "m")
    index = model / "model.safetensors.index.json"
    assert fuzz(run_cli, index, model, text_corruptions(index.read_bytes(), 60, seed=7)) == FUZZ.cases(60)


def test_corruptions_are_seeded():
    data = bytes(range(256)) * 4
    assert list(binary_corruptions(data, 20, 1, 200)) == list(binary_corruptions(data, 20, 1, 200))
    assert np.mean([len(d) < len(data) for _, d in binary_corruptions(data, 40, 1, 200)]) == 0.25
