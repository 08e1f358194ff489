"""Packed-quantized safetensors checkpoints: tensors packed in the test from a known float matrix with
each format's published layout, read back dequantized, checked against a plain re-statement of the
format's formula; plus every bad case and the commands on a GPTQ checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tensorguard.errors import TensorguardError
from tensorguard.loading import WeightFormat, open_model
from tensorguard.synthetic import ModelSpec, make_weights, save_model

N, K = 64, 128  # outputs (rows of the logical weight) and inputs
NAME = "model.layers.0.mlp.down_proj"


@pytest.fixture(scope="module")
def w() -> torch.Tensor:
    return torch.randn(N, K, generator=torch.Generator().manual_seed(0)) * 0.02


def checkpoint(root: Path, tensors: dict[str, torch.Tensor], quantization_config: dict | None = None,
               **config: object) -> Path:
    """A model folder: the packed tensors, a plain embedding and norm, and config.json."""
    root.mkdir(parents=True, exist_ok=True)
    plain = {"model.embed_tokens.weight": torch.randn(64, K), "model.norm.weight": torch.ones(K)}
    save_file({**plain, **{n: t.contiguous() for n, t in tensors.items()}}, str(root / "model.safetensors"))
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (root / "config.json").write_text(json.dumps(config))
    return root


def pack_stream(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (..., L) as one little-endian bit stream along the last axis, in int32 words."""
    bits_le = ((codes[..., None].astype(np.uint32) >> np.arange(bits, dtype=np.uint32)) & 1)
    stream = bits_le.reshape(*codes.shape[:-1], -1).astype(np.uint8)
    return np.packbits(stream, axis=-1, bitorder="little").view("<u4").view(np.int32)


def assert_reads(root: Path, name: str, expected: torch.Tensor, source: torch.Tensor,
                 tolerance: float, fmt: WeightFormat) -> None:
    """The read equals the restated formula, rows read alone equal it, and it is near the source."""
    with open_model(root) as src:
        assert src.format is fmt
        got = src.read(name)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
        for start, stop in ((0, 1), (5, 27), (17, expected.shape[0])):
            torch.testing.assert_close(src.read_rows(name, start, stop), expected[start:stop],
                                       rtol=1e-6, atol=1e-9)
        assert (got - source).norm() < tolerance * source.norm()
        assert not any(n.endswith((".scales", ".qzeros", ".absmax", "_scale_inv", ".SCB", ".biases",
                                   ".g_idx", ".weight_scale", ".quant_map")) for n in src.tensors)


# --- GPTQ ------------------------------------------------------------------------------------------

def gptq_quantize(w: torch.Tensor, bits: int, group: int, act_order: bool):
    """Asymmetric min/max GPTQ-style codes, (K, N) layout, and the group of each input."""
    k = w.shape[1]
    g_idx = np.arange(k) // group
    if act_order:
        g_idx = g_idx[np.random.default_rng(1).permutation(k)]
    wt = w.T.numpy()
    groups = -(-k // group)
    lo = np.stack([wt[g_idx == g].min(0) for g in range(groups)])
    hi = np.stack([wt[g_idx == g].max(0) for g in range(groups)])
    scales = ((hi - lo) / (2 ** bits - 1)).astype(np.float16)
    zeros = np.clip(np.round(-lo / scales.astype(np.float32)), 0, 2 ** bits - 1).astype(np.int64)
    q = np.clip(np.round(wt / scales[g_idx].astype(np.float32) + zeros[g_idx]), 0, 2 ** bits - 1)
    return q.astype(np.int64), zeros, scales, g_idx


def autogptq_pack_3bit(q: np.ndarray) -> np.ndarray:
    """AutoGPTQ's 3-bit packing loop, restated: rows of 32 codes into 3 words (10, 1 split, 10, ...)."""
    q = q.astype(np.uint64)
    out = np.zeros((q.shape[0] // 32 * 3, q.shape[1]), dtype=np.uint64)
    i = row = 0
    while row < out.shape[0]:
        for j in range(10):
            out[row] |= q[i + j] << np.uint64(3 * j)
        i += 10
        out[row] |= (q[i] << np.uint64(30)) & np.uint64(0xFFFFFFFF)
        row += 1
        out[row] |= (q[i] >> np.uint64(2)) & np.uint64(1)
        i += 1
        for j in range(10):
            out[row] |= q[i + j] << np.uint64(3 * j + 1)
        i += 10
        out[row] |= (q[i] << np.uint64(31)) & np.uint64(0xFFFFFFFF)
        row += 1
        out[row] |= (q[i] >> np.uint64(1)) & np.uint64(3)
        i += 1
        for j in range(10):
            out[row] |= q[i + j] << np.uint64(3 * j + 2)
        i += 10
        row += 1
    return (out & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)


@pytest.mark.parametrize(("bits", "act_order", "version"),
                         [(4, False, "gptq"), (4, True, "gptq"), (8, False, "gptq_v2"), (2, True, "gptq"),
                          (3, False, "gptq"), (3, True, "gptq_v2")])
def test_gptq(tmp_path, w, bits, act_order, version):
    group = 32
    q, zeros, scales, g_idx = gptq_quantize(w, bits, group, act_order)
    stored_zeros = zeros - 1 if version == "gptq" else zeros  # v1 stores zero - 1
    qweight = autogptq_pack_3bit(q) if bits == 3 else pack_stream(q.T, bits).T
    tensors = {NAME + ".qweight": torch.from_numpy(np.ascontiguousarray(qweight)),
               NAME + ".qzeros": torch.from_numpy(pack_stream(stored_zeros & (2 ** bits - 1), bits)),
               NAME + ".scales": torch.from_numpy(scales),
               NAME + ".g_idx": torch.from_numpy(g_idx.astype(np.int32))}
    root = checkpoint(tmp_path / "gptq", tensors, {"quant_method": "gptq", "bits": bits,
                                                   "group_size": group, "desc_act": act_order,
                                                   "checkpoint_format": version})
    # W[n, k] = scales[g_idx[k], n] * (q[k, n] - zero[g_idx[k], n])
    expected = torch.from_numpy(scales[g_idx].astype(np.float32)) * torch.from_numpy(
        (q - zeros[g_idx]).astype(np.float32))
    assert_reads(root, NAME + ".weight", expected.T, w, 0.6 if bits <= 3 else 0.1, WeightFormat.GPTQ)
    info = open_model(root).info(NAME + ".weight")
    assert (info.shape, info.dtype, info.quant.bits, info.quant.group_shape) == (
        (N, K), f"gptq-int{bits}", bits, (1, group))
    # codes + fp16 scale, packed zero and int32 g_idx per group / input
    assert info.quant.bits_per_weight == pytest.approx(bits + (16 + bits) / group + 32 / N, rel=1e-3)


def test_gptq_without_config_is_recognised_from_shapes(tmp_path, w):
    q, zeros, scales, _ = gptq_quantize(w, 4, 32, False)
    tensors = {NAME + ".qweight": torch.from_numpy(pack_stream(q.T, 4).T.copy()),
               NAME + ".qzeros": torch.from_numpy(pack_stream(zeros - 1, 4)),
               NAME + ".scales": torch.from_numpy(scales)}
    with open_model(checkpoint(tmp_path / "m", tensors)) as src:
        assert src.format is WeightFormat.GPTQ and src.info(NAME + ".weight").quant.group_size == 32


# --- AWQ -------------------------------------------------------------------------------------------

def awq_pack(q: np.ndarray) -> np.ndarray:
    """AutoAWQ's GEMM packing, restated: word column c holds outputs 8c + order_map[i] in nibble i."""
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    out = np.zeros((q.shape[0], q.shape[1] // 8), dtype=np.uint32)
    for col in range(q.shape[1] // 8):
        for i in range(8):
            out[:, col] |= q[:, col * 8 + order_map[i]].astype(np.uint32) << np.uint32(4 * i)
    return out.view(np.int32)


def test_awq(tmp_path, w):
    q, zeros, scales, _ = gptq_quantize(w, 4, 32, False)  # (K, N) codes, (G, N) zeros and scales
    tensors = {NAME + ".qweight": torch.from_numpy(awq_pack(q)),
               NAME + ".qzeros": torch.from_numpy(awq_pack(zeros)),
               NAME + ".scales": torch.from_numpy(scales)}
    root = checkpoint(tmp_path / "awq", tensors, {"quant_method": "awq", "bits": 4, "group_size": 32,
                                                  "zero_point": True, "version": "gemm"})
    groups = np.arange(K) // 32
    # W[n, k] = (q[k, n] - zero[k // g, n]) * scales[k // g, n]
    expected = torch.from_numpy((q - zeros[groups]).astype(np.float32)) * torch.from_numpy(
        scales[groups].astype(np.float32))
    assert_reads(root, NAME + ".weight", expected.T, w, 0.1, WeightFormat.AWQ)
    del tensors[NAME + ".qzeros"]  # AWQ without config: a qweight narrower than its scales
    assert open_model(checkpoint(tmp_path / "bare", {**tensors, NAME + ".qzeros": torch.from_numpy(
        awq_pack(zeros))})).format is WeightFormat.AWQ


# --- bitsandbytes ------------------------------------------------------------------------------------

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


@pytest.mark.parametrize("nested", [False, True])
def test_bitsandbytes_nf4(tmp_path, w, nested):
    blocksize, flat = 64, w.reshape(-1).numpy()
    absmax = np.abs(flat.reshape(-1, blocksize)).max(1).astype(np.float32)
    codes = np.abs(flat.reshape(-1, blocksize, 1) / absmax[:, None, None] - NF4).argmin(-1).reshape(-1)
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8).reshape(-1, 1)  # first code high
    state = {"quant_type": "nf4", "blocksize": blocksize, "dtype": "bfloat16", "shape": [N, K]}
    tensors = {NAME + ".weight": torch.from_numpy(packed),
               NAME + ".weight.quant_map": torch.from_numpy(NF4)}
    real_absmax = absmax
    if nested:  # absmax itself 8-bit quantized in blocks of 256 around its mean
        code = np.linspace(-1, 1, 256, dtype=np.float32)
        offset = float(absmax.mean())
        centred = absmax - offset
        size = 4
        nested_absmax = np.abs(centred.reshape(-1, size)).max(1).astype(np.float32)
        absmax_codes = np.abs(centred.reshape(-1, size, 1) / nested_absmax[:, None, None] - code).argmin(-1)
        real_absmax = code[absmax_codes.reshape(-1)] * np.repeat(nested_absmax, size) + offset
        tensors |= {NAME + ".weight.absmax": torch.from_numpy(absmax_codes.reshape(-1).astype(np.uint8)),
                    NAME + ".weight.nested_absmax": torch.from_numpy(nested_absmax),
                    NAME + ".weight.nested_quant_map": torch.from_numpy(code)}
        state |= {"nested_blocksize": size, "nested_offset": offset, "nested_dtype": "float32"}
    else:
        tensors[NAME + ".weight.absmax"] = torch.from_numpy(absmax)
    tensors[NAME + ".weight.quant_state.bitsandbytes__nf4"] = torch.tensor(
        list(json.dumps(state).encode()), dtype=torch.uint8)
    root = checkpoint(tmp_path / "bnb", tensors, {"quant_method": "bitsandbytes", "load_in_4bit": True})
    # W.flatten()[i] = quant_map[code[i]] * absmax[i // blocksize]
    expected = torch.from_numpy(NF4[codes] * np.repeat(real_absmax.astype(np.float32), blocksize))
    assert_reads(root, NAME + ".weight", expected.reshape(N, K), w, 0.15, WeightFormat.BNB_4BIT)
    assert open_model(root).info(NAME + ".weight").dtype == "nf4"


def test_bitsandbytes_int8(tmp_path, w):
    scb = w.abs().amax(1)
    cb = torch.round(w / scb[:, None] * 127).to(torch.int8)
    tensors = {NAME + ".weight": cb, NAME + ".SCB": scb,
               NAME + ".weight_format": torch.tensor(0, dtype=torch.uint8)}
    root = checkpoint(tmp_path / "int8", tensors, {"quant_method": "bitsandbytes", "load_in_8bit": True})
    assert_reads(root, NAME + ".weight", cb.float() * scb[:, None] / 127, w, 0.02, WeightFormat.BNB_8BIT)
    tensors[NAME + ".weight_format"] = torch.tensor(1, dtype=torch.uint8)  # col32 tiles
    with pytest.raises(TensorguardError, match="GPU tile layout"):
        open_model(checkpoint(tmp_path / "tiles", tensors, {"quant_method": "bitsandbytes"}))


# --- FP8 with block scales -----------------------------------------------------------------------------

def test_fp8_block_scales(tmp_path, w):
    bn, bk = 24, 48  # N = 64, K = 128: 3 x 3 blocks, the last row and column partial
    grid = torch.zeros(3, 3)
    for i in range(3):
        for j in range(3):
            grid[i, j] = w[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk].abs().max() / 448
    expanded = grid.repeat_interleave(bn, 0)[:N].repeat_interleave(bk, 1)[:, :K]
    codes = (w / expanded).to(torch.float8_e4m3fn)
    tensors = {NAME + ".weight": codes, NAME + ".weight_scale_inv": grid,
               NAME + ".input_scale": torch.tensor([1.0])}
    root = checkpoint(tmp_path / "fp8", tensors, {"quant_method": "fp8", "fmt": "e4m3",
                                                  "weight_block_size": [bn, bk]})
    assert_reads(root, NAME + ".weight", codes.float() * expanded, w, 0.05, WeightFormat.FP8)
    with open_model(root) as src:
        assert NAME + ".input_scale" not in src.tensors
        assert src.info(NAME + ".weight").quant.group_shape == (bn, bk)
    with pytest.raises(TensorguardError, match=r"inconsistent group sizes: scales \[3, 3\] do not fit 32x48"):
        open_model(checkpoint(tmp_path / "bad", tensors, {"quant_method": "fp8",
                                                          "weight_block_size": [32, 48]}))


# --- compressed-tensors ----------------------------------------------------------------------------

def ct_config(fmt: str, **weights: object) -> dict:
    return {"quant_method": "compressed-tensors", "format": fmt,
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"type": "int", **weights}}}}


@pytest.mark.parametrize("symmetric", [True, False])
def test_compressed_tensors_pack_quantized(tmp_path, w, symmetric):
    bits, group = 4, 32
    q, zeros, scales, _ = gptq_quantize(w, bits, group, False)  # unsigned codes and zeros
    if symmetric:
        scale = (w.reshape(N, -1, group).abs().amax(-1) / 7).numpy()  # (N, G)
        q = np.clip(np.round(w.numpy() / np.repeat(scale, group, 1)), -8, 7).astype(np.int64).T + 8
        zeros, scales = np.full((K // group, N), 8), scale.T.astype(np.float16)
    tensors = {NAME + ".weight_packed": torch.from_numpy(pack_stream(q.T, bits)),
               NAME + ".weight_scale": torch.from_numpy(np.ascontiguousarray(scales.T)),
               NAME + ".weight_shape": torch.tensor([N, K])}
    if not symmetric:  # zero points stored offset like the codes, packed along the outputs
        tensors[NAME + ".weight_zero_point"] = torch.from_numpy(pack_stream(zeros, bits).T.copy())
    root = checkpoint(tmp_path / "ct", tensors, ct_config("pack-quantized", num_bits=bits, group_size=group,
                                                          strategy="group", symmetric=symmetric))
    groups = np.arange(K) // group
    expected = torch.from_numpy((q.T - zeros.T[:, groups]).astype(np.float32)) * torch.from_numpy(
        scales.T[:, groups].astype(np.float32))
    assert_reads(root, NAME + ".weight", expected, w, 0.1, WeightFormat.COMPRESSED_TENSORS)


def test_compressed_tensors_float_quantized_per_channel(tmp_path, w):
    scale = w.abs().amax(1, keepdim=True) / 448
    codes = (w / scale).to(torch.float8_e4m3fn)
    tensors = {NAME + ".weight": codes, NAME + ".weight_scale": scale}
    root = checkpoint(tmp_path / "ct", tensors, ct_config("float-quantized", num_bits=8, type="float",
                                                          strategy="channel"))
    assert_reads(root, NAME + ".weight", codes.float() * scale, w, 0.05, WeightFormat.COMPRESSED_TENSORS)


# --- MLX -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [4, 3])
def test_mlx_affine(tmp_path, w, bits):
    group = 32
    g = w.reshape(N, K // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scales = ((hi - lo) / (2 ** bits - 1)).half()
    biases = lo.half()
    q = torch.clamp(torch.round((g - biases[..., None].float()) / scales[..., None].float()), 0,
                    2 ** bits - 1).reshape(N, K).to(torch.int64)
    words = torch.from_numpy(pack_stream(q.numpy(), bits).view(np.uint32).view(np.int32)).view(torch.uint32)
    tensors = {NAME + ".weight": words, NAME + ".scales": scales, NAME + ".biases": biases}
    root = checkpoint(tmp_path / "mlx", tensors, quantization={"group_size": group, "bits": bits})
    # W[n, k] = scales[n, k // g] * q[n, k] + biases[n, k // g]
    groups = torch.arange(K) // group
    expected = scales.float()[:, groups] * q.float() + biases.float()[:, groups]
    assert_reads(root, NAME + ".weight", expected, w, 0.2, WeightFormat.MLX)
    with pytest.raises(TensorguardError, match="no 'quantization' settings"):
        open_model(checkpoint(tmp_path / "bare", tensors))


# --- bad input -------------------------------------------------------------------------------------

def gptq_tensors(w: torch.Tensor, prefix: str = NAME) -> dict[str, torch.Tensor]:
    q, zeros, scales, g_idx = gptq_quantize(w, 4, 32, False)
    return {prefix + ".qweight": torch.from_numpy(pack_stream(q.T, 4).T.copy()),
            prefix + ".qzeros": torch.from_numpy(pack_stream(zeros - 1, 4)),
            prefix + ".scales": torch.from_numpy(scales),
            prefix + ".g_idx": torch.from_numpy(g_idx.astype(np.int32))}


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 32}


@pytest.mark.parametrize(("drop", "what"), [(".qzeros", "zero points"), (".scales", "scales")])
def test_packed_weight_missing_its_scales_or_zeros(tmp_path, w, drop, what):
    tensors = gptq_tensors(w)
    del tensors[NAME + drop]
    with pytest.raises(TensorguardError, match=f"packed weight '{NAME}.weight' has no {what}"):
        open_model(checkpoint(tmp_path / "m", tensors, GPTQ))


def test_bitsandbytes_missing_absmax(tmp_path):
    state = torch.tensor(list(b'{"quant_type": "nf4", "blocksize": 64, "shape": [8, 8]}'), dtype=torch.uint8)
    tensors = {NAME + ".weight": torch.zeros(32, 1, dtype=torch.uint8),
               NAME + ".weight.quant_state.bitsandbytes__nf4": state,
               NAME + ".weight.quant_map": torch.zeros(16)}
    with pytest.raises(TensorguardError, match="has no absmax scales"):
        open_model(checkpoint(tmp_path / "m", tensors))


@pytest.mark.parametrize(("config", "message"), [
    (GPTQ | {"group_size": 64}, r"inconsistent group sizes: 4 groups of scales for 128 inputs, but "
                                r"group_size is 64"),
    (GPTQ | {"checkpoint_format": "marlin"}, "GPTQ checkpoint_format 'marlin' is not read"),
    ({"quant_method": "awq", "version": "gemv"}, "AWQ version 'gemv' is not read"),
    ({"quant_method": "hqq"}, "config.json says quant_method 'hqq'"),
    (None, "integer-packed weights of an unrecognised format"),
])
def test_bad_or_unknown_quantization_settings(tmp_path, w, config, message):
    tensors = gptq_tensors(w)
    if config is None:  # integer weights, no config and none of the known markers
        tensors = {NAME + ".weight": torch.zeros(N, K, dtype=torch.int8)}
    with pytest.raises(TensorguardError, match=message):
        open_model(checkpoint(tmp_path / "m", tensors, config))


def test_inconsistent_bitsandbytes_blocks(tmp_path):
    state = torch.tensor(list(b'{"quant_type": "nf4", "blocksize": 64, "shape": [16, 16]}'),
                         dtype=torch.uint8)
    tensors = {NAME + ".weight": torch.zeros(128, 1, dtype=torch.uint8),
               NAME + ".weight.absmax": torch.ones(3), NAME + ".weight.quant_map": torch.zeros(16),
               NAME + ".weight.quant_state.bitsandbytes__nf4": state}
    with pytest.raises(TensorguardError, match="inconsistent group sizes: 128 packed bytes and 3 absmax"):
        open_model(checkpoint(tmp_path / "m", tensors))


def test_compressed_tensors_with_two_weight_schemes_is_refused(tmp_path, w):
    config = ct_config("pack-quantized", num_bits=4, group_size=32, strategy="group")
    config["config_groups"]["group_1"] = {"targets": ["re:.*down_proj"],
                                          "weights": {"type": "int", "num_bits": 8, "strategy": "channel"}}
    with pytest.raises(TensorguardError, match="2 distinct weight quantizations"):
        packed = {NAME + ".weight_packed": torch.zeros(N, 16, dtype=torch.int32)}
        open_model(checkpoint(tmp_path / "m", packed, config))


# --- commands on a GPTQ checkpoint of a whole model ---------------------------------------------------

def test_commands_on_a_gptq_checkpoint_and_its_source(tmp_path, run_cli):
    spec = ModelSpec(scheme="llama", hidden=64, layers=2, intermediate=128, vocab=96, heads=4)
    weights = make_weights(spec, 0)
    source = save_model(weights, tmp_path / "source.safetensors")
    packed: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if name.endswith("_proj.weight"):
            packed |= gptq_tensors(tensor, name.removesuffix(".weight"))
        else:
            packed[name] = tensor
    root = tmp_path / "source-GPTQ"
    root.mkdir()
    save_file(packed, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"quantization_config": GPTQ}))
    inspected = json.loads(run_cli("inspect", root, "--json").out)
    assert inspected["num_tensors"] == len(weights) and inspected["dtypes"]["gptq-int4"] > 0
    compared = run_cli("compare", source, root, "--json", "-q")
    assert compared.code == 0, compared.err
    data = json.loads(compared.out)
    assert data["verdict"]["label"] == "derived" and data["weights"]["matrix_cosine"] > 0.99
    fingerprinted = run_cli("fingerprint", root, "-o", tmp_path / "fp", "--samples", "2", "-q")
    assert fingerprinted.code == 0, fingerprinted.err
