"""Hostile model metadata and numbers: GGUF metadata of the wrong type (every key the tool reads, with
a value of every GGUF type), huge and negative counts, tensors whose byte ranges overlap, and
numbers that would overflow (fingerprints of +-1e308, weights of 3e38). Every case answers with one
line and exit 2, or works (exit 0); never exit 70, never a numpy warning.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from gguf import GGUFValueType

from tensorguard.reference import bundled_dir
from tensorguard.synthetic import ModelSpec, make_weights, save_model
from tensorguard.testing.gguf_write import save_gguf
from test_hostile import clean_failure
from test_hostile_loading import EMBED, F32, LLAMA, gguf_bytes, gguf_str, kv, text, u64

V = GGUFValueType
TINY = ModelSpec(scheme="llama", hidden=32, layers=1, intermediate=64, vocab=32, heads=2, kv_heads=1)
FAST = ("--samples", "1", "--device", "cpu")

#: Every metadata key the tool reads, with the types it accepts (knowledge as data: a key read
#: anywhere must be listed here, so that it is tried with a value of every type).
KEYS = {
    "general.type": {V.STRING}, "general.architecture": {V.STRING}, "general.alignment": {V.UINT32},
    "split.count": {V.UINT16}, "split.no": {V.UINT16}, "llama.block_count": {V.UINT32},
    "llama.attention.head_count": {V.UINT32}, "llama.attention.head_count_kv": {V.UINT32},
    "general.name": {V.STRING}, "general.organization": {V.STRING}, "general.basename": {V.STRING},
    "general.finetune": {V.STRING}, "general.size_label": {V.STRING}, "general.file_type": {V.UINT32},
    "llama.context_length": {V.UINT32}, "llama.embedding_length": {V.UINT32},
    "llama.feed_forward_length": {V.UINT32}, "llama.vocab_size": {V.UINT32},
    "tokenizer.ggml.tokens": {V.ARRAY}, "tokenizer.ggml.token_type": {V.ARRAY},
    "general.base_model.count": {V.UINT32}, "general.base_model.0.name": {V.STRING},
}
_FORMATS = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
            V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d"}
#: A value of every GGUF type (arrays of several item types, empty, and nested).
VALUES: list[tuple[str, bytes]] = [
    ("uint8", struct.pack("<IB", V.UINT8, 200)), ("int8", struct.pack("<Ib", V.INT8, -3)),
    ("uint16", struct.pack("<IH", V.UINT16, 1)), ("int16", struct.pack("<Ih", V.INT16, -1)),
    ("uint32", struct.pack("<II", V.UINT32, 0)), ("int32", struct.pack("<Ii", V.INT32, -7)),
    ("float32", struct.pack("<If", V.FLOAT32, 1.5)), ("bool", struct.pack("<I?", V.BOOL, True)),
    ("uint64", struct.pack("<IQ", V.UINT64, 1 << 62)), ("int64", struct.pack("<Iq", V.INT64, -(1 << 62))),
    ("float64 nan", struct.pack("<Id", V.FLOAT64, math.nan)),
    ("string", struct.pack("<I", V.STRING) + gguf_str("llama")),
    ("array of strings", struct.pack("<IIQ", V.ARRAY, V.STRING, 2) + gguf_str("a") + gguf_str("b")),
    ("array of int32", struct.pack("<IIQii", V.ARRAY, V.INT32, 2, 1, 2)),
    ("array of bools", struct.pack("<IIQ??", V.ARRAY, V.BOOL, 2, True, False)),
    ("empty array", struct.pack("<IIQ", V.ARRAY, V.UINT8, 0)),
    ("array of arrays", struct.pack("<IIQIQ", V.ARRAY, V.ARRAY, 1, V.STRING, 1) + gguf_str("x")),
]


def tiny_gguf(path: Path, *metadata: bytes, tensors: list | None = None, data: bytes = bytes(128)) -> Path:
    path.write_bytes(gguf_bytes([LLAMA, *metadata], tensors or [EMBED], data))
    return path


@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_key_read_with_a_value_of_every_type(tmp_path, run_cli, key):
    """inspect and fingerprint answer 0 or a one-line error naming the file and the key."""
    for label, value in VALUES:
        path = tiny_gguf(tmp_path / "m.gguf", kv(key, 0, b"")[:-4] + value)
        for command in (("inspect", path, "--json"), ("fingerprint", path, "--json", *FAST)):
            try:
                err = clean_failure(run_cli, *command, codes=(0, 2))
            except AssertionError as exc:
                raise AssertionError(f"{key} = {label}: {exc}") from None
            assert not err or str(path) in err, (key, label, err)


WRONG = [  # (key, GGUF value, message)
    ("general.architecture", (V.UINT32, 7), "'general.architecture' is an integer, expected a string"),
    ("general.type", (V.BOOL, True), "'general.type' is a boolean, expected a string"),
    ("llama.block_count", (V.STRING, "6"), "'llama.block_count' is a string, expected an integer"),
    ("llama.attention.head_count", (V.FLOAT32, 2.0), "'llama.attention.head_count' is a number"),
    ("llama.attention.head_count_kv", (V.ARRAY, ["a"], V.STRING), "holding a string, expected integers"),
    ("general.name", (V.INT32, 3), "'general.name' is an integer, expected a string"),
    ("general.file_type", (V.STRING, "Q4"), "'general.file_type' is a string, expected an integer"),
    ("general.base_model.count", (V.STRING, "2"), "'general.base_model.count' is a string"),
    ("tokenizer.ggml.tokens", (V.INT32, 7), "'tokenizer.ggml.tokens' is an integer, expected an array"),
    ("tokenizer.ggml.tokens", (V.STRING, "abc"), "'tokenizer.ggml.tokens' is a string, expected an array"),
    ("tokenizer.ggml.tokens", (V.ARRAY, list(range(32)), V.INT32),
     "'tokenizer.ggml.tokens' is an array holding an integer, expected strings only"),
    ("tokenizer.ggml.token_type", (V.ARRAY, ["x"] * 32, V.STRING), "'tokenizer.ggml.token_type' is an array"),
]


#: Keys only the weight signature reads (index add, scan).
SIGNATURE_ONLY = {"tokenizer.ggml.token_type"}


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return make_weights(TINY, 0)


@pytest.mark.parametrize(("key", "value", "message"), WRONG, ids=[f"{k}={v[0].name}" for k, v, _ in WRONG])
def test_wrong_metadata_types_are_refused_by_every_command(tmp_path, run_cli, weights, key, value, message):
    """A real model file, one key of the wrong type: inspect, fingerprint, index add and scan."""
    path = save_gguf(weights, tmp_path / "m.gguf", arch="llama", heads=2, kv_heads=1,
                     metadata={key: value})
    db = tmp_path / "cat.sqlite"
    for command in (("inspect", path), ("fingerprint", path, *FAST, "-o", tmp_path / "out"),
                    ("index", "add", path, "--db", db, *FAST), ("scan", path, "--db", db, *FAST)):
        if key in SIGNATURE_ONLY and command[0] in ("inspect", "fingerprint"):
            clean_failure(run_cli, *command, codes=(0,))  # a key these commands never read
            continue
        err = clean_failure(run_cli, *command)
        assert "GGUF metadata" in err and message in err and str(path) in err, err
    assert not db.exists()


def test_a_correct_vocabulary_still_reads(tmp_path, run_cli, weights):
    path = save_gguf(weights, tmp_path / "m.gguf", arch="llama", heads=2, kv_heads=1,
                     metadata={"tokenizer.ggml.tokens": (V.ARRAY, [f"t{i}" for i in range(32)], V.STRING),
                               "tokenizer.ggml.token_type": (V.ARRAY, [1] * 32, V.INT32)})
    added = run_cli("index", "add", path, "--db", tmp_path / "cat.sqlite", *FAST)
    assert added.code == 0, added.err


# --- counts: huge, negative ---------------------------------------------------------------------------

COUNTS = [  # (id, metadata, message or None for exit 0)
    ("array of 2**63 bytes", [kv("big", V.ARRAY, struct.pack("<IQ", V.UINT8, 1 << 63))],
     "truncated GGUF file"),
    ("array of 2**40 strings", [kv("big", V.ARRAY, struct.pack("<IQ", V.STRING, 1 << 40))],
     "truncated GGUF file"),
    ("string of 2**63 bytes", [kv("big", V.STRING, struct.pack("<Q", 1 << 63))], "truncated GGUF file"),
    ("negative block_count", [kv("llama.block_count", V.INT64, struct.pack("<q", -1))], "-1 blocks"),
    ("negative base_model.count", [kv("general.base_model.count", V.INT32, struct.pack("<i", -5))], None),
    ("huge base_model.count", [u64("general.base_model.count", (1 << 64) - 1)], None),
    ("huge head_count", [u64("llama.attention.head_count", 1 << 62)], None),
]


@pytest.mark.parametrize(("metadata", "message"), [c[1:] for c in COUNTS], ids=[c[0] for c in COUNTS])
def test_huge_and_negative_counts(tmp_path, run_cli, metadata, message):
    path = tiny_gguf(tmp_path / "m.gguf", *metadata)
    for command in (("inspect", path, "--json"), ("fingerprint", path, "--json", *FAST)):
        err = clean_failure(run_cli, *command, codes=(2,) if message else (0,))
        assert message is None or (message in err and str(path) in err), err


def test_a_huge_metadata_entry_count(tmp_path, run_cli):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, (1 << 64) - 1) + text("a", "b"))
    assert "cannot fit in" in clean_failure(run_cli, "inspect", path)


# --- tensors whose bytes overlap --------------------------------------------------------------------

OVERLAPS = [  # (id, tensors, message)
    ("same range", [EMBED, ("output.weight", (8, 4), F32, 0)], "'token_embd.weight' (bytes"),
    ("inside another", [("token_embd.weight", (8, 8), F32, 0), ("output.weight", (8, 1), F32, 64)],
     "overlaps tensor 'token_embd.weight'"),
    ("straddling", [EMBED, ("output.weight", (8, 4), F32, 96)], "'output.weight' (bytes"),
]


@pytest.mark.parametrize(("tensors", "message"), [o[1:] for o in OVERLAPS], ids=[o[0] for o in OVERLAPS])
def test_overlapping_gguf_tensors_are_refused(tmp_path, run_cli, tensors, message):
    path = tiny_gguf(tmp_path / "m.gguf", tensors=tensors, data=bytes(256))
    for command in (("inspect", path), ("fingerprint", path, "--json", *FAST)):
        err = clean_failure(run_cli, *command)
        assert "overlaps" in err and message in err and str(path) in err, err


def test_adjacent_and_empty_tensors_are_not_overlaps(tmp_path, run_cli):
    path = tiny_gguf(tmp_path / "m.gguf", tensors=[EMBED, ("output.weight", (8, 4), F32, 128),
                                                    ("blk.0.attn_norm.weight", (0,), F32, 128)],
                     data=bytes(256))
    clean_failure(run_cli, "inspect", path, codes=(0,))


# --- numbers that would overflow -----------------------------------------------------------------------

def _scaled(value: float) -> dict:
    data = json.loads((bundled_dir() / "phi-4_features.json").read_text())
    return {**{k: (value if v > 0 else -value) if isinstance(v, float) else v for k, v in data.items()},
            "model_name": "edge"}


def test_fingerprints_beyond_1e100_are_refused(tmp_path, run_cli):
    path = tmp_path / "edge_features.json"
    path.write_text(json.dumps(_scaled(1e308)))
    err = clean_failure(run_cli, "predict", path, "--centers", "llama-3.2-1b,Qwen2.5-3B")
    assert str(path) in err and "beyond +-1e+100" in err
    assert "beyond" in clean_failure(run_cli, "index", "import", path, "--db", tmp_path / "c.sqlite")


@pytest.mark.filterwarnings("error")  # a numpy RuntimeWarning fails the test
def test_fingerprints_at_1e100_give_finite_answers(tmp_path, run_cli):
    path = tmp_path / "edge_features.json"
    path.write_text(json.dumps(_scaled(1e100)))
    result = run_cli("predict", path, "--centers", "llama-3.2-1b,Qwen2.5-3B", "--json")
    assert result.code == 0 and "Warning" not in result.err, result.err


@pytest.mark.filterwarnings("error")
def test_compare_of_huge_weights(tmp_path, run_cli):
    spec = ModelSpec(scheme="llama", hidden=32, layers=2, intermediate=64, vocab=32, heads=2)
    w = make_weights(spec, 0)
    big = {k: (v * 1e37).clamp(-3e38, 3e38) for k, v in w.items()}
    flat = {k: torch.full_like(v, 3e38) for k, v in w.items()}
    for name, weights in (("big", big), ("flat", flat), ("small", w)):
        save_model(weights, tmp_path / name / "m.safetensors")
    for a, b in (("big", "small"), ("flat", "small"), ("big", "big")):
        result = run_cli("compare", tmp_path / a, tmp_path / b, "--json", "--samples", "1", "--device", "cpu")
        assert result.code in (0, 2) and "Warning" not in result.err, result.err
        if result.code == 2:
            assert result.err.count("\n") == 1


# --- messages name the offending file inside a model folder ----------------------------------------

NAMED_FILE = {  # packed-format case of test_hostile_loading -> the file its message must name
    "gptq group_size string": "config.json", "gptq bits string": "config.json",
    "gptq bits list": "config.json", "gptq format list": "config.json", "fp8 block zero": "config.json",
    "fp8 block string": "config.json", "ct format list": "config.json", "mlx bits string": "config.json",
    "mlx group list": "config.json", "gptq float zeros": "model.safetensors",
    "gptq float g_idx": "model.safetensors", "gptq 1-D scales": "model.safetensors",
    "bnb state float": "model.safetensors", "bnb state shape": "model.safetensors",
    "bnb blocksize 0": "model.safetensors", "bnb state not json": "model.safetensors",
    "bnb 2-D absmax": "model.safetensors", "ct weight_shape of 3": "model.safetensors",
    "ct float shape": "model.safetensors",
}


@pytest.mark.parametrize("case", sorted(NAMED_FILE))
def test_messages_name_the_file_inside_the_folder(tmp_path, run_cli, case):
    from test_hostile_loading import PACKED, K, N, checkpoint, gptq_tensors

    _, tensors, qconfig, config, message = next(p for p in PACKED if p[0] == case)
    w = torch.randn(N, K) * 0.02
    if tensors is None or callable(tensors):
        tensors = gptq_tensors(w) if tensors is None else tensors(gptq_tensors(w))
    root = checkpoint(tmp_path / "m", tensors, qconfig, **config)
    err = clean_failure(run_cli, "inspect", root)
    assert f"error: {root / NAMED_FILE[case]}: " in err and message in err, err
