"""The permutation-robust independence test: function-preserving disguises, pruning, the null."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lineage_models import write_tokenizer
from tensorguard.architectures import mlp_blocks
from tensorguard.lineage import compare, independence
from tensorguard.lineage.independence import (
    _best_keys,
    block_log_p,
    fisher_log_p,
    independence_test,
    match_rows,
    normalise_rows,
    spearman,
)
from tensorguard.loading import open_model
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model
from tensorguard.testing.disguises import drop_blocks, llama_logits, rename, rescale, vocabulary

LLAMA = ModelSpec(scheme="llama", hidden=64, layers=6, intermediate=192, vocab=256, heads=4,
                  kv_heads=2)
Weights = dict[str, torch.Tensor]


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _logits(w: Weights, tokens: torch.Tensor) -> torch.Tensor:
    return llama_logits({k: v.double() for k, v in w.items()}, tokens[None], LLAMA)[0]


@pytest.fixture(scope="module")
def base() -> Weights:
    return make_weights(LLAMA, 0)


def _save(tmp_path, name: str, w: Weights) -> str:
    """A model file beside the tokenizer every model here shares (rows paired by token string)."""
    write_tokenizer(tmp_path, vocabulary(LLAMA.vocab + 40))  # + 40: room for an extension
    return str(save_model(w, tmp_path / f"{name}.safetensors"))


def _test(tmp_path, a: Weights, b: Weights, blocks: int = 4):
    with open_model(_save(tmp_path, "a", a)) as sa, open_model(_save(tmp_path, "b", b)) as sb:
        return independence_test(sa, sb, blocks=blocks)


def test_permuted_copy_keeps_function_and_is_derived_with_tiny_p(tmp_path, base):
    derived = finetune(base, 0.05, seed=7)
    disguised = rename(derived, LLAMA, seed=11)
    tokens = torch.randint(LLAMA.vocab, (12,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(_logits(derived, tokens), _logits(disguised, tokens), atol=1e-9)
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
    assert c.independence.alignment.method == "orthogonal"
    assert c.independence.alignment.fit > 0.99  # a renaming is a rotation


def test_rescaled_copy_keeps_function_and_is_derived(tmp_path, base):
    derived = finetune(base, 0.05, seed=7)
    scaled = rename(rescale(derived, LLAMA, seed=3), LLAMA, seed=5)
    tokens = torch.randint(LLAMA.vocab, (12,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(_logits(derived, tokens), _logits(scaled, tokens),
                          atol=1e-6)  # float32 rounding of the rescaled weights
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", scaled))
    assert c.verdict.label == "derived"
    assert c.independence is not None and c.independence.p_value < 1e-6


def test_block_removed_is_derived_and_paired_with_the_right_blocks(tmp_path, base):
    pruned = rename(finetune(drop_blocks(base, (2,)), 0.05, seed=3),
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
    t = _test(tmp_path, base, rename(pruned, ModelSpec(**{**LLAMA.__dict__, "intermediate": 150}),
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
    a, b = _save(tmp_path, "a", base), _save(tmp_path, "b", rename(base, LLAMA, seed=3))
    one = compare(a, b, blocks=2)
    assert [x.block_a for x in one.independence.blocks] == ["model.layers.0", "model.layers.5"]
    assert one == compare(a, b, blocks=2)


def test_residual_width_pruning_uses_a_semi_orthogonal_alignment(tmp_path, base):
    keep = torch.sort(_perm(LLAMA.hidden, 8)[:56]).values
    narrow = {}
    for name, t in finetune(base, 0.05, seed=4).items():
        if t.ndim == 1 or name.endswith(("o_proj.weight", "down_proj.weight")):
            narrow[name] = t[keep]
        else:
            narrow[name] = t[:, keep]
    t = _test(tmp_path, base, narrow)
    assert t.alignment is not None and t.alignment.method == "semi-orthogonal"
    assert (t.alignment.hidden_a, t.alignment.hidden_b) == (64, 56)
    assert t.p_value < 1e-6


def test_spearman_equals_scipy_with_ties_and_constants():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 30, 200), rng.integers(0, 30, 200)  # many ties, as matchings have
        y[:100] = x[:100]
        assert math.isclose(spearman(x, y), stats.spearmanr(x, y).statistic, rel_tol=1e-12)
    assert math.isnan(spearman(np.ones(10), np.arange(10)))


def test_running_argmax_over_raw_key_blocks_equals_the_float64_argmax():
    gen = torch.Generator().manual_seed(2)
    q = normalise_rows(torch.randn(50, 40, generator=gen))
    keys = torch.randn(300, 40, generator=gen) * 3 + 5  # offset and scaled: raw, not normalised
    keys[200] = keys[30] = keys[17]  # ties in another block and in the same: the first index wins
    q[7] = normalise_rows(keys[17:18])[0]
    full = np.abs(np.corrcoef(q.double().numpy(), keys.double().numpy())[:50, 50:]).argmax(axis=1)
    assert np.array_equal(_best_keys(q, keys.split(64), raw=True), full)
    assert _best_keys(q, keys.split(64), raw=True)[7] == 17


def _slow_matches(query: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The slow path: float64 Pearson correlation of every query row with every key row."""
    n = len(query)
    return np.abs(np.corrcoef(query, key)[:n, n:]).argmax(axis=1)


@pytest.mark.parametrize("narrow", ["b", "a"])
def test_matched_subset_is_the_full_matching_restricted(tmp_path, base, monkeypatch, narrow):
    """Each sampled neuron's two matches are those of the float64 full computation, and rho is
    Spearman's rho of the full matchings at those neurons."""
    monkeypatch.setattr(independence, "MATCH_NEURONS", 40)
    monkeypatch.setattr(independence, "BLOCK_ELEMENTS", 64 * 30)  # several key blocks
    keep = torch.sort(_perm(LLAMA.intermediate, 4)[:150]).values
    pruned = dict(finetune(base, 0.3, seed=2))
    for i in range(LLAMA.layers):
        p = f"model.layers.{i}.mlp."
        pruned[p + "gate_proj.weight"] = pruned[p + "gate_proj.weight"][keep]
        pruned[p + "up_proj.weight"] = pruned[p + "up_proj.weight"][keep]
        pruned[p + "down_proj.weight"] = pruned[p + "down_proj.weight"][:, keep]
    other = rename(pruned, ModelSpec(**{**LLAMA.__dict__, "intermediate": 150}), seed=1)
    wa, wb = (base, other) if narrow == "b" else (other, base)
    with open_model(_save(tmp_path, "a", wa)) as a, open_model(_save(tmp_path, "b", wb)) as b:
        test = independence_test(a, b)
        _, aligner = independence.align_residual(a, b, "model.embed_tokens.weight",
                                                 "model.embed_tokens.weight")
        pick = independence._spread(150, 40)
        blocks_a, blocks_b = (mlp_blocks({i.name: i.shape for i in s.matrices()}) for s in (a, b))
        for blk, blk_a, blk_b in zip(test.blocks, (blocks_a[i] for i in (0, 2, 3, 5)),
                                     (blocks_b[i] for i in (0, 2, 3, 5)), strict=True):
            assert blk.matched == len(pick) == 40
            matchings = []
            for ma, mb in ((blk_a.first, blk_b.first), (blk_a.second, blk_b.second)):
                xa = independence.read_neuron_major(a, ma).double().numpy()
                xb = aligner.apply(independence.read_neuron_major(b, mb)).double().numpy()
                query, key = (xb, xa) if narrow == "b" else (xa, xb)
                matchings.append(_slow_matches(query, key)[pick])
            assert blk.rho == pytest.approx(stats.spearmanr(*matchings).statistic, abs=1e-12)
            assert blk.rho > 0.9


@pytest.mark.parametrize("seed", [1, 2])
def test_matched_subset_keeps_verdicts_and_a_valid_null(tmp_path, base, monkeypatch, seed):
    derived = rename(finetune(base, 0.5, seed=seed), LLAMA, seed=seed)
    unrelated = finetune(make_weights(LLAMA, 10 + seed), 0.05, seed=7)
    a = _save(tmp_path, "a", base)
    for label, other in (("derived", derived), ("independent", unrelated)):
        b = _save(tmp_path, label, other)
        full = compare(a, b)
        monkeypatch.setattr(independence, "MATCH_NEURONS", 48)
        sub = compare(a, b)
        monkeypatch.undo()
        assert full.independence.blocks[0].matched == LLAMA.intermediate
        assert sub.independence.blocks[0].matched == 48
        assert sub.verdict.label == full.verdict.label == label
        if label == "independent":
            assert sub.independence.p_value > 1e-2


