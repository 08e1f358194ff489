"""The permutation-robust independence test: function-preserving disguises, pruning, the null."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tensorguard.architectures import mlp_blocks
from tensorguard.architectures.renaming import Renaming
from tensorguard.lineage import compare
from tensorguard.lineage.independence import (
    block_log_p,
    fisher_log_p,
    independence_test,
    match_rows,
    normalise_rows,
)
from tensorguard.loading import open_model
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model

LLAMA = ModelSpec(scheme="llama", hidden=64, layers=6, intermediate=192, vocab=256, heads=4,
                  kv_heads=2)
Weights = dict[str, torch.Tensor]


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def permute_llama(w: Weights, spec: ModelSpec, seed: int) -> Weights:
    """Rename residual dims, attention heads (GQA-consistent) and MLP neurons of every block."""
    renaming = Renaming(spec.hidden, spec.heads, spec.kv_heads or spec.heads, spec.intermediate, seed)
    return {name: renaming.apply(name, t) for name, t in w.items()}


def rescale_llama(w: Weights, spec: ModelSpec, seed: int) -> Weights:
    """q by c and k by 1/c; each up row by c_i and the matching down column by 1/c_i."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(w)
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        c = 0.25 + 4 * float(torch.rand(1, generator=gen))
        out[p + "self_attn.q_proj.weight"] = w[p + "self_attn.q_proj.weight"] * c
        out[p + "self_attn.k_proj.weight"] = w[p + "self_attn.k_proj.weight"] / c
        ci = 0.1 + 10 * torch.rand(spec.intermediate, generator=gen)
        out[p + "mlp.up_proj.weight"] = w[p + "mlp.up_proj.weight"] * ci[:, None]
        out[p + "mlp.down_proj.weight"] = w[p + "mlp.down_proj.weight"] / ci[None, :]
    return out


def llama_forward(w: Weights, spec: ModelSpec, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of a llama-style decoder (RMSNorm, causal GQA attention, SwiGLU MLP) in float64."""
    w = {k: v.double() for k, v in w.items()}
    kv = spec.kv_heads or spec.heads

    def rms(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * g

    x = w["model.embed_tokens.weight"][tokens]
    t = len(tokens)
    mask = torch.full((t, t), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(t, spec.heads, spec.head_dim)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(t, kv, spec.head_dim)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(t, kv, spec.head_dim)
        k, v = (z.repeat_interleave(spec.heads // kv, dim=1) for z in (k, v))
        att = torch.softmax(torch.einsum("thd,shd->hts", q, k) / math.sqrt(spec.head_dim) + mask, -1)
        x = x + torch.einsum("hts,shd->thd", att, v).reshape(t, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def remove_block(w: Weights, spec: ModelSpec, drop: int) -> Weights:
    """Depth pruning: drop block ``drop`` and renumber the blocks after it."""
    out = {}
    for name, t in w.items():
        parts = name.split(".")
        if parts[1] == "layers":
            i = int(parts[2])
            if i == drop:
                continue
            parts[2] = str(i - 1 if i > drop else i)
        out[".".join(parts)] = t
    return out


@pytest.fixture(scope="module")
def base() -> Weights:
    return make_weights(LLAMA, 0)


def _save(tmp_path, name: str, w: Weights) -> str:
    return str(save_model(w, tmp_path / f"{name}.safetensors"))


def _test(tmp_path, a: Weights, b: Weights, blocks: int = 4):
    with open_model(_save(tmp_path, "a", a)) as sa, open_model(_save(tmp_path, "b", b)) as sb:
        return independence_test(sa, sb, blocks=blocks)


def test_permuted_copy_keeps_function_and_is_derived_with_tiny_p(tmp_path, base):
    derived = finetune(base, 0.05, seed=7)
    disguised = permute_llama(derived, LLAMA, seed=11)
    tokens = torch.randint(LLAMA.vocab, (12,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(llama_forward(derived, LLAMA, tokens),
                          llama_forward(disguised, LLAMA, tokens), atol=1e-9)
    assert not torch.equal(derived["model.layers.0.mlp.up_proj.weight"],
                           disguised["model.layers.0.mlp.up_proj.weight"])
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", disguised))
    assert c.weights is not None and c.weights.matrix_cosine is not None
    assert abs(c.weights.matrix_cosine) < 0.2  # direct cosine is fooled ...
    assert c.verdict.label == "derived"  # ... the test is not
    assert c.independence is not None and c.independence.p_value is not None
    assert c.independence.p_value < 1e-6
    assert all(b.rho > 0.9 for b in c.independence.blocks)
    assert c.independence.alignment is not None
    assert c.independence.alignment.method == "assignment"


def test_rescaled_copy_keeps_function_and_is_derived(tmp_path, base):
    derived = finetune(base, 0.05, seed=7)
    scaled = permute_llama(rescale_llama(derived, LLAMA, seed=3), LLAMA, seed=5)
    tokens = torch.randint(LLAMA.vocab, (12,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(llama_forward(derived, LLAMA, tokens), llama_forward(scaled, LLAMA, tokens),
                          atol=1e-6)  # float32 rounding of the rescaled weights
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", scaled))
    assert c.verdict.label == "derived"
    assert c.independence is not None and c.independence.p_value < 1e-6


def test_block_removed_is_derived_and_paired_with_the_right_blocks(tmp_path, base):
    pruned = permute_llama(finetune(remove_block(base, LLAMA, 2), 0.05, seed=3),
                           ModelSpec(**{**LLAMA.__dict__, "layers": 5}), seed=9)
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", pruned))
    assert c.verdict.label == "derived"
    t = c.independence
    assert t is not None and t.p_value < 1e-6
    assert [(b.block_a, b.block_b) for b in t.blocks] == [
        ("model.layers.0", "model.layers.0"), ("model.layers.1", "model.layers.1"),
        ("model.layers.4", "model.layers.3"), ("model.layers.5", "model.layers.4")]
    assert all(b.candidates == 6 for b in t.blocks)


def test_width_pruned_copy_matches_one_sided(tmp_path, base):
    keep = torch.sort(_perm(LLAMA.intermediate, 4)[:150]).values
    pruned = dict(finetune(base, 0.05, seed=2))
    for i in range(LLAMA.layers):
        p = f"model.layers.{i}.mlp."
        pruned[p + "gate_proj.weight"] = pruned[p + "gate_proj.weight"][keep]
        pruned[p + "up_proj.weight"] = pruned[p + "up_proj.weight"][keep]
        pruned[p + "down_proj.weight"] = pruned[p + "down_proj.weight"][:, keep]
    t = _test(tmp_path, base, permute_llama(pruned, ModelSpec(**{**LLAMA.__dict__, "intermediate": 150}),
                                            seed=1))
    assert t.applicable and t.p_value < 1e-6
    assert {(b.neurons_a, b.neurons_b) for b in t.blocks} == {(192, 150)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_independent_inits_are_independent(tmp_path, seed):
    a = finetune(make_weights(LLAMA, 0), 0.05, seed=7)
    b = finetune(make_weights(LLAMA, seed), 0.05, seed=7)
    c = compare(_save(tmp_path, "a", a), _save(tmp_path, "b", b))
    assert c.independence is not None and c.independence.p_value is not None
    assert c.independence.p_value > 1e-2
    assert c.verdict.label == "independent"
    assert all(abs(b.rho) < 0.3 for b in c.independence.blocks)


def test_vocabulary_extended_copy_is_derived(tmp_path, base):
    gen = torch.Generator().manual_seed(5)
    extended = dict(base)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        extended[name] = torch.cat([base[name], 0.02 * torch.randn(40, LLAMA.hidden, generator=gen)])
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", extended))
    assert c.verdict.label == "derived"
    assert c.independence is not None and c.independence.alignment is not None
    assert c.independence.alignment.rows == LLAMA.vocab
    assert c.independence.p_value < 1e-6


def _permute_plain(w: Weights, layers: int, prefix: str, names: dict[str, str], conv1d: bool,
                   hidden: int, neurons: int, seed: int) -> Weights:
    """Permute residual dims of embeddings and norms, and MLP neurons (in/out matrices)."""
    res, out = _perm(hidden, seed), dict(w)
    for name, t in w.items():
        if t.ndim == 1 and t.shape[0] == hidden:
            out[name] = t[res]
        elif "embeddings" in name or name.endswith(("wte.weight", "wpe.weight")):
            out[name] = t[:, res]
    for i in range(layers):
        q = _perm(neurons, seed + 1 + i)
        up, down = f"{prefix}.{i}.{names['up']}", f"{prefix}.{i}.{names['down']}"
        if conv1d:  # stored (in, out)
            out[up], out[down] = w[up][res][:, q], w[down][q][:, res]
        else:
            out[up], out[down] = w[up][q][:, res], w[down][res][:, q]
    return out


@pytest.mark.parametrize(("scheme", "prefix", "names", "conv1d"), [
    ("gpt2", "transformer.h", {"up": "mlp.c_fc.weight", "down": "mlp.c_proj.weight"}, True),
    ("bert", "encoder.layer", {"up": "intermediate.dense.weight", "down": "output.dense.weight"}, False),
])
def test_conv1d_and_encoder_layouts(tmp_path, scheme, prefix, names, conv1d):
    spec = ModelSpec(scheme=scheme, hidden=48, layers=3, intermediate=160, vocab=200)
    w = make_weights(spec, 0)
    blocks = mlp_blocks({i.name: i.shape for i in open_model(_save(tmp_path, "a", w)).matrices()})
    assert [b.scheme for b in blocks] == ["up/down"] * 3 and blocks[0].neurons == 160
    derived = _permute_plain(finetune(w, 0.05, 3), 3, prefix, names, conv1d, 48, 160, seed=2)
    t = _test(tmp_path, w, derived)
    assert t.applicable and t.p_value < 1e-6
    other = _permute_plain(finetune(make_weights(spec, 1), 0.05, 3), 3, prefix, names, conv1d, 48, 160,
                           seed=2)
    assert _test(tmp_path, w, other).p_value > 1e-3


def test_different_mlp_layouts_are_not_testable(tmp_path):
    llama = make_weights(LLAMA, 0)
    gpt2 = make_weights(ModelSpec(scheme="gpt2", hidden=64, layers=6, intermediate=192), 0)
    t = _test(tmp_path, llama, gpt2)
    assert not t.applicable and "different MLP layouts" in (t.reason or "")


def test_match_rows_chunked_equals_full_argmax(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    q = normalise_rows(torch.randn(300, 32, generator=gen))
    k = normalise_rows(torch.randn(70, 32, generator=gen))
    full = (q @ k.T).abs().argmax(dim=1).numpy()
    monkeypatch.setattr("tensorguard.lineage.independence._ENTRIES_PER_CHUNK", 70 * 7)
    assert np.array_equal(match_rows(q, k), full)
    corr = np.corrcoef(q.numpy()[:5], k.numpy()[:5])[:5, 5:]
    assert np.allclose((q[:5] @ k[:5].T).numpy(), corr, atol=1e-5)


def test_null_statistic_is_standard_normal():
    """Matchings between independent random matrices: rho * sqrt(n - 1) has mean 0, sd 1."""
    gen = torch.Generator().manual_seed(1)
    z = []
    for _ in range(60):
        a1, a2, b1, b2 = (normalise_rows(torch.randn(128, 48, generator=gen)) for _ in range(4))
        rho = stats.spearmanr(match_rows(b1, a1), match_rows(b2, a2)).statistic
        z.append(rho * math.sqrt(127))
    assert abs(np.mean(z)) < 0.4 and 0.7 < np.std(z) < 1.3
    assert stats.kstest(z, "norm").pvalue > 0.01


def test_fisher_in_log_space_equals_scipy():
    rhos, n = [0.1, 0.25, -0.05, 0.3], 200
    log_ps = [block_log_p(r, n) for r in rhos]
    expected = stats.combine_pvalues(np.exp(log_ps), method="fisher").pvalue
    assert math.isclose(math.exp(fisher_log_p(log_ps)), expected, rel_tol=1e-9)
    combined = fisher_log_p([block_log_p(1.0, 14336)] * 4)
    assert math.isfinite(combined) and combined < -1000  # no underflow to log(0)


def test_blocks_option_and_determinism(tmp_path, base):
    a, b = _save(tmp_path, "a", base), _save(tmp_path, "b", permute_llama(base, LLAMA, 3))
    one = compare(a, b, blocks=2)
    assert [x.block_a for x in one.independence.blocks] == ["model.layers.0", "model.layers.5"]
    assert one == compare(a, b, blocks=2)


def test_residual_width_pruning_uses_argmax_alignment(tmp_path, base):
    keep = torch.sort(_perm(LLAMA.hidden, 8)[:56]).values
    narrow = {}
    for name, t in finetune(base, 0.05, seed=4).items():
        if t.ndim == 1 or name.endswith(("o_proj.weight", "down_proj.weight")):
            narrow[name] = t[keep]
        else:
            narrow[name] = t[:, keep]
    t = _test(tmp_path, base, narrow)
    assert t.alignment is not None and t.alignment.method == "argmax"
    assert (t.alignment.hidden_a, t.alignment.hidden_b) == (64, 56)
    assert t.p_value < 1e-6
