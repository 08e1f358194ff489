"""Direct weight evidence: identity, casts, cosine per role, shape differences, no shared names."""

from __future__ import annotations

import itertools

import pytest
import torch

from tensorguard.lineage import compare
from tensorguard.lineage import weights as wmod
from tensorguard.lineage.weights import cosine, weight_evidence
from tensorguard.loading import ModelSource, open_model
from tensorguard.synthetic import ModelSpec, finetune, low_rank_update, make_weights, save_model

SPEC = ModelSpec(scheme="llama", hidden=64, layers=3, intermediate=160, vocab=256, heads=4)


@pytest.fixture(scope="module")
def base() -> dict[str, torch.Tensor]:
    return make_weights(SPEC, 0)


def _save(tmp_path, name, w, dtype=torch.float32) -> str:
    return str(save_model(w, tmp_path / f"{name}.safetensors", dtype=dtype))


def test_same_file_twice_is_same_weights(tmp_path, base):
    path = _save(tmp_path, "a", base)
    c = compare(path, path)
    assert c.verdict.label == "same weights" and "byte for byte" in c.verdict.reason
    assert c.weights is not None and c.weights.identical_share == 1.0 and c.weights.casts == ()
    assert c.fingerprint.distance == 0.0


def test_bf16_cast_is_same_weights_and_names_the_cast(tmp_path, base):
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", base, torch.bfloat16))
    assert c.verdict.label == "same weights"
    assert c.weights is not None and c.weights.casts == ("F32 -> BF16",)
    assert "F32 -> BF16" in c.verdict.reason


def test_a_changed_value_is_not_identical(tmp_path, base):
    changed = dict(base)
    w = changed["model.layers.1.mlp.up_proj.weight"].clone()
    w[3, 4] += 1e-3
    changed["model.layers.1.mlp.up_proj.weight"] = w
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", changed, torch.bfloat16))
    assert c.weights is not None and c.weights.identical_tensors == c.weights.shared_tensors - 1
    assert c.verdict.label == "derived"  # nearly everything identical, but not all


@pytest.mark.parametrize("derive", [lambda w: low_rank_update(w, rank=4, scale=0.3, seed=1),
                                    lambda w: finetune(w, 0.02, seed=1)])
def test_low_rank_and_small_perturbation_are_derived(tmp_path, base, derive):
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", derive(base)))
    assert c.verdict.label == "derived"
    assert c.weights is not None and c.weights.matrix_cosine > 0.9
    assert c.weights.identical_tensors < c.weights.shared_tensors
    assert set(c.weights.roles) >= {"embedding", "attention", "ffn", "norm"}
    assert c.independence is not None and c.independence.p_value < 1e-6


def _exact_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The slow path: float64 over every entry."""
    return float(torch.nn.functional.cosine_similarity(a.reshape(1, -1).double(),
                                                       b.reshape(1, -1).double()))


def test_cosine_exact_and_subsampled(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 50, generator=gen)
    b = a + 0.5 * torch.randn(40, 50, generator=gen)
    exact = _exact_cosine(a, b)
    assert cosine(a, b) == pytest.approx(exact, abs=1e-12)
    monkeypatch.setattr(wmod, "EXACT_LIMIT", 1000)  # 2000 entries: the seeded sample of rows
    sampled = cosine(a, b)
    assert sampled != exact and sampled == pytest.approx(exact, abs=0.05)
    assert cosine(a, b) == sampled  # the same rows every time


@pytest.mark.parametrize("shape", [(400, 300), (3000, 40), (7, 20000), (200_000,), (30, 40, 50)])
@pytest.mark.parametrize("r", [0.0, 0.5, 0.95])
def test_sampled_cosine_is_within_its_documented_error(monkeypatch, shape, r):
    monkeypatch.setattr(wmod, "EXACT_LIMIT", 1 << 14)
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(shape, generator=gen)
    b = r * a + (1 - r * r) ** 0.5 * torch.randn(shape, generator=gen)
    exact = _exact_cosine(a, b)
    # standard error (1 - c^2) / sqrt(n) for n sampled entries; allow five of them
    assert abs(cosine(a, b) - exact) < 5 * (1 - exact**2) / (1 << 14) ** 0.5


@pytest.mark.parametrize(("rows", "length"), [(40, 50), (8192, 2048), (128256, 2048), (2048, 8192),
                                              (2, 1 << 21), (1 << 21, 1), (10, 10)])
def test_sample_runs_are_disjoint_seeded_and_about_the_limit(rows, length):
    runs = wmod.sample_runs(rows, length)
    assert runs == wmod.sample_runs(rows, length)
    assert all(0 <= s < e <= rows for s, e in runs)
    assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(runs))  # sorted, disjoint
    if rows * length <= wmod.EXACT_LIMIT:
        assert runs == [(0, rows)]
        return
    entries = sum(e - s for s, e in runs) * length
    run = max(e - s for s, e in runs) * length
    assert wmod.EXACT_LIMIT - run < entries < wmod.EXACT_LIMIT + run
    assert len(runs) < 2 * wmod.RUNS


def test_streamed_cosines_equal_the_in_memory_sample(tmp_path, base, monkeypatch):
    monkeypatch.setattr(wmod, "EXACT_LIMIT", 1000)  # most tensors sampled
    derived = finetune(base, 0.3, seed=2)
    with open_model(_save(tmp_path, "a", base)) as a, \
            open_model(_save(tmp_path, "b", derived, torch.bfloat16)) as b:
        w = weight_evidence(a, b)
        for t in w.tensors:
            assert t.cosine == pytest.approx(cosine(a.read(t.name), b.read(t.name)), rel=1e-12)


def test_sampling_leaves_verdicts_and_cosines_in_place(tmp_path, base, monkeypatch):
    """Every tensor sampled (tiny limit) against every tensor exact (huge limit)."""
    pairs = {"finetune": finetune(base, 0.3, seed=2),
             "low rank": low_rank_update(base, rank=4, scale=0.3, seed=1),
             "independent": make_weights(SPEC, 5)}
    a = _save(tmp_path, "a", base)
    for label, other in pairs.items():
        b = _save(tmp_path, label.replace(" ", "_"), other)
        monkeypatch.setattr(wmod, "EXACT_LIMIT", 1 << 40)
        exact = compare(a, b)
        monkeypatch.setattr(wmod, "EXACT_LIMIT", 1 << 10)
        sampled = compare(a, b)
        assert sampled.verdict.label == exact.verdict.label, label
        assert sampled.weights.matrix_cosine == pytest.approx(exact.weights.matrix_cosine, abs=0.05)
        assert any(s.cosine != e.cosine for s, e in zip(sampled.weights.tensors, exact.weights.tensors,
                                                              strict=True))


def test_identity_is_bitwise_and_checked_to_the_last_block(tmp_path, base, monkeypatch):
    monkeypatch.setattr(wmod, "_IDENTITY_BLOCK", 64)  # many blocks per tensor
    name = "model.layers.2.mlp.down_proj.weight"
    odd = dict(base)
    w = base[name].clone()
    w[0, 0], w[1, 1] = float("nan"), 0.0
    odd[name] = w
    last = dict(odd)
    w = odd[name].clone()
    w[-1, -1] += 1e-3  # differs only in the last block
    last[name] = w
    signed = dict(odd)
    w = odd[name].clone()
    w[1, 1] = -0.0  # equal as floats, different bits
    signed[name] = w
    with open_model(_save(tmp_path, "a", odd)) as a:
        for label, other, same in (("nan", odd, True), ("last", last, False), ("signed zero", signed, False)):
            with open_model(_save(tmp_path, label.replace(" ", "_"), other)) as b:
                t = next(t for t in weight_evidence(a, b).tensors if t.name == name)
            assert t.identical is same, label


def test_identity_of_a_derivative_reads_one_small_block(tmp_path, base, monkeypatch):
    """A tensor that differs in its first rows is read no further by the identity check (of a
    remote model, nothing more is fetched); one equal there is still checked to the end."""
    name = "model.layers.2.mlp.down_proj.weight"  # (64, 160)
    monkeypatch.setattr(wmod, "_IDENTITY_HEAD", 2 * 160)  # its first two rows
    tuned = finetune(base, 0.01, seed=1)
    late = dict(base)
    late[name] = base[name].clone()
    late[name][-1, -1] += 1.0
    read: list[tuple[int, int]] = []
    real = ModelSource.read_rows

    def spy(self, tensor, start, stop, dtype=None):
        if tensor == name:
            read.append((start, stop))
        return real(self, tensor, start, stop, dtype)

    monkeypatch.setattr(ModelSource, "read_rows", spy)
    rows = base[name].shape[0]
    head = wmod._IDENTITY_HEAD // base[name].shape[1]
    with open_model(_save(tmp_path, "a", base)) as a:
        for label, other, blocks in (("tuned", tuned, [(0, head)]),
                                     ("late", late, [(0, head), (head, rows)])):
            read.clear()
            with open_model(_save(tmp_path, label, other)) as b:
                assert not wmod._identical(a, b, name, rows)
            assert read == [r for r in blocks for _ in (a, b)], label


def test_vocabulary_extension_compares_shared_rows(tmp_path, base):
    extended = dict(base)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        extended[name] = torch.cat([base[name], torch.zeros(8, SPEC.hidden)])
    with open_model(_save(tmp_path, "a", base)) as a, open_model(_save(tmp_path, "b", extended)) as b:
        w = weight_evidence(a, b)
    assert not w.all_identical
    assert {t.name: t.rows for t in w.shape_mismatches} == {"lm_head.weight": 256,
                                                           "model.embed_tokens.weight": 256}
    assert all(t.identical and t.cosine == 1.0 for t in w.shape_mismatches)
    assert w.identical_tensors == w.shared_tensors - 2


def test_removed_block_is_listed(tmp_path, base):
    fewer = {n: t for n, t in base.items() if not n.startswith("model.layers.2.")}
    with open_model(_save(tmp_path, "a", base)) as a, open_model(_save(tmp_path, "b", fewer)) as b:
        w = weight_evidence(a, b)
    assert len(w.only_in_a) == 9 and not w.only_in_b
    assert all(n.startswith("model.layers.2.") for n in w.only_in_a)


def test_no_shared_tensor_names_is_not_applicable_not_zero(tmp_path, base):
    neox = make_weights(ModelSpec(scheme="neox", hidden=64, layers=3, intermediate=160), 0)
    c = compare(_save(tmp_path, "a", base), _save(tmp_path, "b", neox))
    w = c.weights
    assert w is not None and not w.applicable and "no tensor name" in (w.reason or "")
    assert w.matrix_cosine is None and w.identical_tensors is None and w.identical_share is None
    assert c.verdict.label != "derived"
