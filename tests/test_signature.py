"""The weight signature: invariance to function-preserving disguises, separation, alignment, format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineage_models import SPEC, base_weights, forward, rename, rescale, rotate, save
from tensorguard.errors import TensorguardError
from tensorguard.loading import open_model
from tensorguard.signatures import (
    EMBED_TOKENS,
    Signature,
    align_blocks,
    compute_signature,
    retrieval_vector,
    select_tokens,
    similarity,
    triangle,
    unit,
)
from tensorguard.synthetic import finetune

VOCAB = [f"tok{i}" for i in range(SPEC.vocab)]


@pytest.fixture(scope="module")
def base() -> dict[str, torch.Tensor]:
    return base_weights(0)


@pytest.fixture(scope="module")
def base_sig(tmp_path_factory, base) -> Signature:
    return compute_signature(save(tmp_path_factory.mktemp("base") / "m", base, VOCAB))


def _sig(tmp_path, w, vocab=VOCAB) -> Signature:
    return compute_signature(save(tmp_path / "m", w, vocab))


@pytest.mark.parametrize("disguise", [rename, rescale, rotate, lambda w, s: rescale(rename(w, s), s + 1)],
                         ids=["permute", "rescale", "rotate", "permute+rescale"])
def test_function_preserving_disguises_keep_the_signature(tmp_path, base, base_sig, disguise):
    disguised = disguise(base, 3)
    tokens = torch.randint(SPEC.vocab, (10,), generator=torch.Generator().manual_seed(0))
    reference = forward(base, tokens)
    assert torch.allclose(forward(disguised, tokens), reference, atol=1e-6 * float(reference.abs().max()))
    changed = [n for n in base if n.endswith("proj.weight") and not torch.allclose(base[n], disguised[n])]
    assert changed  # the weights did change ...
    s = similarity(base_sig, _sig(tmp_path, disguised))
    assert s.score > 0.999  # ... the signature did not (float16 storage is the only difference)
    assert min(s.kinds.values()) > 0.999 and s.embed is not None and s.embed > 0.999


def test_independent_seeds_separate_and_a_finetune_stays_close(tmp_path, base_sig, base):
    other = similarity(base_sig, _sig(tmp_path / "other", base_weights(1)))
    tuned = similarity(base_sig, _sig(tmp_path / "tuned", rename(finetune(base, 0.3, seed=5), 9)))
    assert abs(other.score) < 0.1
    assert tuned.score > 0.6
    assert set(tuned.kinds) == {"qk", "ov", "mlp", "gate"}


def test_removed_blocks_are_aligned_not_indexed(tmp_path, base, base_sig):
    kept = [0, 1, 4, 5]
    pruned = {n: t for n, t in base.items() if not n.startswith(("model.layers.2.", "model.layers.3."))}
    pruned = {n.replace("model.layers.4.", "model.layers.2.").replace("model.layers.5.", "model.layers.3."): t
              for n, t in pruned.items()}
    sig = _sig(tmp_path, pruned)
    s = similarity(base_sig, sig)
    assert [(p.block_a, p.block_b) for p in s.pairs] == [(k, i) for i, k in enumerate(kept)]
    assert s.score > 0.999


def test_align_blocks_is_the_best_monotone_pairing():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(3, 5))
    from itertools import combinations

    brute = max(combinations(range(5), 3), key=lambda cols: sum(sim[i, c] for i, c in enumerate(cols)))
    assert align_blocks(sim) == list(enumerate(brute))
    assert align_blocks(sim.T) == [(c, i) for i, c in enumerate(brute)]


def test_vocabulary_extension_compares_over_shared_token_strings(tmp_path, base, base_sig):
    extra = 64
    grown = dict(base)
    for n in ("model.embed_tokens.weight", "lm_head.weight"):
        new = torch.randn(extra, SPEC.hidden, generator=torch.Generator().manual_seed(1)) * 0.02
        grown[n] = torch.cat([base[n], new])
    sig = _sig(tmp_path, grown, [*VOCAB, *(f"new{i}" for i in range(extra))])
    s = similarity(base_sig, sig)
    assert s.shared_tokens < EMBED_TOKENS  # some picks are new tokens ...
    assert s.score > 0.999  # ... compared over the shared ones only


def test_without_a_tokenizer_ids_are_the_keys(tmp_path, base):
    a, b = _sig(tmp_path / "a", base, None), _sig(tmp_path / "b", rename(base, 4), None)
    assert a.tokens[0].startswith("#")
    assert similarity(a, b).score > 0.999


def test_signature_bytes_are_deterministic_and_round_trip(tmp_path, base, base_sig):
    again = _sig(tmp_path, base)
    assert again.to_bytes() == base_sig.to_bytes()
    back = Signature.from_bytes(base_sig.to_bytes())
    assert back.to_bytes() == base_sig.to_bytes()
    assert back.tokens == base_sig.tokens and back.block_index == tuple(range(SPEC.layers))
    with pytest.raises(TensorguardError, match="corrupt signature"):
        Signature.from_bytes(b"not a signature")


def test_signature_streams_in_row_blocks(tmp_path, base, base_sig, monkeypatch):
    """Tiny row blocks give the same values (up to float16 rounding of sums taken in another order)."""
    with open_model(save(tmp_path / "m", base, VOCAB)) as model:
        original = model.row_blocks

        def small(name, **kw):
            return original(name, **{**kw, "max_elements": 64})

        monkeypatch.setattr(model, "row_blocks", small)
        streamed = compute_signature(model)
    assert streamed.tokens == base_sig.tokens
    for got, want in ((streamed.embed, base_sig.embed), (streamed.blocks, base_sig.blocks)):
        assert np.abs(got.astype(np.float32) - want.astype(np.float32)).max() < 1e-2


def test_token_sample_is_a_min_hash_of_strings():
    strings = [f"t{i}" for i in range(500)]
    picked = select_tokens(strings, 32)
    shuffled = strings[::-1]
    assert sorted(strings[i] for i in picked) == sorted(shuffled[i] for i in select_tokens(shuffled, 32))
    assert sorted(select_tokens([None, "a", None, "b"], 8)) == [1, 3]  # special tokens never picked


def test_retrieval_vector_is_the_embedding_part_over_its_tokens(base_sig):
    tokens, vector = retrieval_vector(base_sig)
    n = len(tokens)
    direct = unit(triangle(base_sig.embed[:n, :n].astype(np.float32)))
    assert np.allclose(vector.astype(np.float32), direct, atol=1e-3)
    assert abs(float(vector.astype(np.float32) @ vector.astype(np.float32)) - 1) < 1e-2
