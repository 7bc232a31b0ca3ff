"""T5 span corruption (Raffel et al. 2020; t5.data.preprocessors `random_spans_helper`), numpy.

Per sequence of T tokens: n = round(T·span_noise_density) noise tokens in k =
round(n / span_mean_length) spans (`ModelSpec.span_layout`). The n noise tokens are cut into k
non-empty spans and the T - n kept tokens into k non-empty runs, each by a uniformly random
composition, and they alternate, kept first, so the totals are exact and every sequence has
the same layout lengths. Span i is replaced in the input by sentinel i (token id vocab_size + i,
one extra embedding row each); the target is, per span, its sentinel then its tokens:

    tokens  a b c d e f g h       input   a b <0> e f <1> h
    noise       ^ ^     ^         target  <0> c d <1> g

The decoder reads the target from its first sentinel and predicts the next token at each
position (the n noise tokens and the k - 1 later sentinels: nats per target token). Training
corruptions are a pure function of (run seed, step), so a resumed run sees the same ones; the
held-out corruptions a pure function of data.seed, fixed for every evaluation and every run of
a study (as mlm's masks).
"""

from __future__ import annotations

import numpy as np

from .spec import DataSpec

_TAG_SPAN = 0x7370616E


def _compositions(rng: np.random.Generator, rows: int, total: int, parts: int) -> np.ndarray:
    """(rows, parts) uniformly random compositions of `total` into `parts` positive integers:
    parts - 1 distinct cut points among the total - 1 gaps."""
    if parts == 1:
        return np.full((rows, 1), total, dtype=np.int64)
    cuts = np.sort(rng.random((rows, total - 1)).argsort(axis=1)[:, : parts - 1] + 1, axis=1)
    edges = np.concatenate([np.zeros((rows, 1), np.int64), cuts, np.full((rows, 1), total, np.int64)], axis=1)
    return np.diff(edges, axis=1)


def noise_spans(rows: int, T: int, noise: int, spans: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, T) span index of every noise position, -1 for kept positions: k spans of noise
    tokens, each after a non-empty run of kept tokens."""
    kept = _compositions(rng, rows, T - noise, spans)  # (rows, k)
    noisy = _compositions(rng, rows, noise, spans)  # (rows, k)
    lengths = np.stack([kept, noisy], axis=2).reshape(rows, 2 * spans)  # kept, noise, kept, ...
    segment = np.repeat(np.tile(np.arange(2 * spans), rows), lengths.ravel()).reshape(
        rows, T
    )  # segment number of each position
    return np.where(segment % 2 == 1, segment // 2, -1)


def span_corrupt(
    tokens: np.ndarray, vocab_size: int, noise: int, spans: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(input (B, T - noise + spans), target (B, noise + spans)) of a (B, T) token array."""
    B, T = tokens.shape
    span = noise_spans(B, T, noise, spans, rng)
    is_noise = span >= 0
    starts = is_noise & ~np.concatenate([np.zeros((B, 1), bool), is_noise[:, :-1]], axis=1)
    sentinel = vocab_size + span
    # input: kept tokens, and a sentinel at the first position of each span (rest dropped)
    inp = np.where(starts, sentinel, np.where(is_noise, -1, tokens))
    inp = inp[inp >= 0].reshape(B, T - noise + spans)
    # target: at each noise position, (its span's sentinel if it starts one, the token)
    pairs = np.stack([np.where(starts, sentinel, -1), np.where(is_noise, tokens, -1)], axis=2)
    target = pairs[pairs >= 0].reshape(B, noise + spans)
    return inp, target


def span_train_rng(run_seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([run_seed, _TAG_SPAN, step])


def span_val_rng(data: DataSpec) -> np.random.Generator:
    return np.random.default_rng([data.seed, _TAG_SPAN, 1 << 20])
