import hashlib

import numpy as np
import pytest

from trainer.data import (
    ZipfSource,
    _markov_table,
    make_source,
    markov_loss_floor,
    split_files,
    true_entropy,
    write_tokens,
    zipf_loss_floor,
)
from trainer.spec import DataSpec, SpecError


def test_reference_entropies_from_scaling_md():
    # SCALING.md: V=32, k=1, a=0.1 -> about 1.75 nats; V=32, k=2, a=0.05 -> about 1.23
    assert true_entropy(DataSpec(vocab_size=32, order=1, concentration=0.1)) == pytest.approx(1.75, abs=0.1)
    assert true_entropy(DataSpec(vocab_size=32, order=2, concentration=0.05)) == pytest.approx(1.23, abs=0.1)


@pytest.mark.parametrize("V,k", [(3, 1), (2, 2), (3, 2)])
def test_entropy_rate_brute_force(V, k):
    d = DataSpec(vocab_size=V, order=k, concentration=0.5, seed=7, seq_len=8, val_tokens=64)
    P, _ = _markov_table(V, k, 0.5, 7)
    C = V**k
    # full context transition matrix and its stationary distribution by eigen-decomposition
    M = np.zeros((C, C))
    for c in range(C):
        for y in range(V):
            M[c, (c * V + y) % C] += P[c, y]
    w, vecs = np.linalg.eig(M.T)
    pi = np.real(vecs[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    h = -(pi[:, None] * P * np.log(P)).sum()
    assert true_entropy(d) == pytest.approx(h, rel=1e-9)
    assert markov_loss_floor(d) >= true_entropy(d) - 1e-12


def test_sampler_matches_table_entropy():
    d = DataSpec(vocab_size=8, order=1, concentration=0.3, seq_len=32, val_tokens=64)
    src = make_source(d, run_seed=0)
    w = src.batch(0, 4000)
    P, _ = _markov_table(8, 1, 0.3, 0)
    nll = -np.log(P[w[:, 1:-1], w[:, 2:]]).mean()
    assert nll == pytest.approx(true_entropy(d), abs=0.02)


def test_markov_is_deterministic_and_positional():
    d = DataSpec(vocab_size=16, seq_len=16, val_tokens=256)
    a, b = make_source(d, 0), make_source(d, 0)
    np.testing.assert_array_equal(a.batch(0, 40), np.concatenate([b.batch(0, 25), b.batch(25, 15)]))
    np.testing.assert_array_equal(a.batch(1000, 8), b.batch(1000, 8))
    assert not np.array_equal(make_source(d, 1).batch(0, 8), a.batch(0, 8))  # run seed
    np.testing.assert_array_equal(make_source(d, 1).val, a.val)  # same val set
    assert not np.array_equal(a.val[:8], a.batch(0, 8))  # independent
    assert a.val.shape == (16, 17) and a.epochs(10_000) == 0.0


def _corpus(tmp_path, n=40):
    for i in range(n):
        (tmp_path / f"f{i:02d}.txt").write_bytes(bytes([i + 32]) * 600)
    return DataSpec(source="text", vocab_size=256, paths=(str(tmp_path),), seq_len=16, val_tokens=128)


def test_text_split_by_file(tmp_path):
    d = _corpus(tmp_path)
    names = [f"0/f{i:02d}.txt" for i in range(40)]
    train_i, val_i = split_files(names)
    assert val_i == [
        i for i, n in enumerate(names) if int(hashlib.sha1(n.encode()).hexdigest()[:12], 16) % 10 == 0
    ]
    assert set(train_i) | set(val_i) == set(range(40)) and not set(train_i) & set(val_i)
    src = make_source(d, 0)
    val_bytes = {i + 32 for i in val_i}
    train_seen = set(np.unique(src.batch(0, 200)).tolist())
    assert train_seen.isdisjoint(val_bytes)
    assert set(np.unique(src.val).tolist()) <= val_bytes
    n = src.n_windows
    assert src.epochs(n) == 1.0 and src.epochs(n // 2) == pytest.approx(0.5, abs=0.01)
    # one epoch visits every window exactly once: a permutation of window ids
    assert sorted(src._perm(0).tolist()) == list(range(n))


def test_text_needs_two_files(tmp_path):
    (tmp_path / "only.txt").write_bytes(b"x" * 1000)
    d = DataSpec(source="text", vocab_size=256, paths=(str(tmp_path),), seq_len=16, val_tokens=64)
    with pytest.raises(SpecError) as e:
        make_source(d, 0)
    assert e.value.field == "data.paths"


def test_default_text_corpus_is_builtin():
    src = make_source(DataSpec(source="text", vocab_size=256, seq_len=32, val_tokens=1024), 0)
    assert src.unique_train_tokens > 1_000_000 and src.params()["val_files"] > 0
    assert src.batch(0, 4).max() < 256


def test_tokens_memmap_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 1000, 5000), rng.integers(0, 1000, 600)
    write_tokens(tmp_path / "train.bin", train)
    write_tokens(tmp_path / "val.bin", val)
    d = DataSpec(source="tokens", vocab_size=1000, paths=(str(tmp_path),), seq_len=20, val_tokens=200)
    src = make_source(d, 0)
    np.testing.assert_array_equal(src.val[1], val[20:41])
    w = src.batch(0, 3)
    for row in w:  # every window is a contiguous slice of train.bin
        starts = np.flatnonzero(train[:-20] == row[0])
        assert any(np.array_equal(train[s : s + 21], row) for s in starts)
    assert src.unique_train_tokens == 5000
    with pytest.raises(ValueError):
        write_tokens(tmp_path / "bad.bin", [70000])
    small = DataSpec(source="tokens", vocab_size=500, paths=(str(tmp_path),), seq_len=20, val_tokens=200)
    with pytest.raises(SpecError) as e:
        make_source(small, 0)
    assert e.value.field == "data.vocab_size"


# --------------------------------------------------------------------------- zipf


def _zipf(**kw):
    base = dict(
        source="zipf",
        vocab_size=8,
        lexicon_size=300,
        zipf_exponent=1.1,
        min_word_len=2,
        max_word_len=4,
        seq_len=24,
        val_tokens=240,
        seed=3,
    )
    return DataSpec(**{**base, **kw})


def test_zipf_lexicon_is_prefix_free_and_zipf_distributed():
    d = _zipf()
    lex = ZipfSource(d, 0).lex
    words = [tuple(lex.tokens[r, : lex.lengths[r]].tolist()) for r in range(len(lex.probs))]
    assert len(set(words)) == 300 and set(lex.lengths.tolist()) == {2, 3, 4}
    as_set = set(words)
    assert not any(w[:j] in as_set for w in words for j in range(1, len(w)))
    ranks = np.arange(1, 301)
    np.testing.assert_allclose(lex.probs, ranks**-1.1 / (ranks**-1.1).sum())


def test_zipf_entropy_rate_exact_decode_and_monte_carlo():
    d = _zipf()
    src = ZipfSource(d, 0)
    lex = src.lex
    ids = src.sample_words(np.random.default_rng(11), 3000)
    windows = src.spell(ids)
    prefix = lex.prefix_log_probs
    logp = np.log(lex.probs)
    nll = []
    for row, w in zip(ids, windows):
        decoded, rest = lex.decode(w[1:])  # exact decode of the word segmentation
        assert decoded == row[1 : 1 + len(decoded)].tolist()
        nll.append(-(logp[decoded].sum() + (prefix[len(rest)][tuple(rest)] if rest else 0.0)))
    mc_floor = np.mean(nll) / d.seq_len
    se = np.std(nll) / np.sqrt(len(nll)) / d.seq_len
    assert abs(mc_floor - zipf_loss_floor(d)) < 4 * se
    # the entropy rate: -mean log p per token over a long stream of whole words
    many = src.sample_words(np.random.default_rng(12), 20000).ravel()
    rate_mc = -logp[many].sum() / lex.lengths[many].sum()
    h = -(lex.probs * logp).sum() / (lex.probs * lex.lengths).sum()
    assert true_entropy(d) == pytest.approx(h, rel=1e-12)
    assert rate_mc == pytest.approx(true_entropy(d), rel=0.01)
    assert zipf_loss_floor(d) > true_entropy(d)  # variable lengths: the cut word costs
    assert src.true_loss(windows) == pytest.approx(np.mean(nll) / d.seq_len, rel=1e-12)
    assert src.params()["val_true_loss"] == pytest.approx(zipf_loss_floor(d), rel=0.2)


def test_zipf_fixed_word_length_floor_equals_rate():
    d = _zipf(min_word_len=3, max_word_len=3, seq_len=24, lexicon_size=120)
    assert zipf_loss_floor(d) == pytest.approx(true_entropy(d), rel=1e-12)
    src = make_source(d, 0)
    assert src.params()["true_entropy"] == pytest.approx(true_entropy(d))


def test_zipf_is_deterministic_and_positional():
    d = _zipf()
    a, b = make_source(d, 0), make_source(d, 0)
    np.testing.assert_array_equal(a.batch(0, 700), np.concatenate([b.batch(0, 300), b.batch(300, 400)]))
    assert not np.array_equal(make_source(d, 1).batch(0, 8), a.batch(0, 8))  # run seed
    np.testing.assert_array_equal(make_source(d, 1).val, a.val)  # same val set
    assert a.val.shape == (10, 25) and a.val.min() >= 0 and a.val.max() < 8
    other = make_source(_zipf(seed=4), 0)
    assert not np.array_equal(other.val, a.val)  # data seed


def test_zipf_keys_leave_other_sources_run_keys_alone():
    from trainer.spec import ModelSpec, RecipeSpec, RunSpec

    m = ModelSpec(n_layer=1, d_model=16, n_head=1, vocab_size=8, seq_len=24)
    mk = lambda d: RunSpec(model=m, data=d, recipe=RecipeSpec(), tokens=10_000)
    markov = DataSpec(vocab_size=8, seq_len=24)
    assert "lexicon_size" not in mk(markov).to_dict()["data"]
    assert mk(markov).key() == mk(DataSpec(vocab_size=8, seq_len=24, lexicon_size=99)).key()
    assert mk(_zipf()).key() != mk(_zipf(zipf_exponent=1.3)).key()
    assert RunSpec.from_dict(mk(_zipf()).to_dict()) == mk(_zipf())
