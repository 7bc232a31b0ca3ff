"""What a run predicts and how it is scored, beyond plain next-token loss (pure numpy).

- mlm (BERT-style): 15% of positions are selected; of those 80% become the mask token (id
  vocab_size, the model's extra embedding row), 10% a uniformly random token, 10% stay. The loss
  covers the selected positions only (targets elsewhere are -100). Training masks are a pure
  function of (run seed, step), so a resumed run sees the same masks; the held-out masks are a
  pure function of data.seed, fixed for every evaluation and every run of a study.
- prefix (prefix LM, T5's "prefix LM" on a decoder): each window of T+1 tokens is split at a
  prefix length p uniform in 1..T-1; the first p positions attend to each other both ways, the
  rest causally, and the loss covers the next-token predictions from position p-1 on (the
  T-p+1 tokens after the prefix), nats per predicted token. Split points are drawn like mlm's
  masks: training from (run seed, step), held-out fixed by data.seed.
- length extrapolation (Press et al., ALiBi's protocol): the held-out tokens are cut into
  segments of K·T+1 tokens (K = lcm of train.eval_lengths, T = data.seq_len); at length k·T each
  segment is split into K/k non-overlapping windows, so every length scores the same tokens.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .spec import DataSpec, SpecError

MLM_SELECT = 0.15
MLM_MASK, MLM_RANDOM = 0.8, 0.1  # of the selected; the remaining 10% are kept
_TAG_MLM = 0x6D6C6D


def mlm_corrupt(
    tokens: np.ndarray, vocab_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of BERT-style masking of a (B, T) token array; every sequence has at
    least one selected position so no batch has an empty loss."""
    B, T = tokens.shape
    selected = rng.random((B, T)) < MLM_SELECT
    empty = np.flatnonzero(~selected.any(axis=1))
    selected[empty, rng.integers(0, T, len(empty))] = True
    r = rng.random((B, T))
    inputs = tokens.copy()
    inputs[selected & (r < MLM_MASK)] = vocab_size
    rand = selected & (r >= MLM_MASK) & (r < MLM_MASK + MLM_RANDOM)
    inputs[rand] = rng.integers(0, vocab_size, int(rand.sum()))
    return inputs, np.where(selected, tokens, -100)


def mlm_train_rng(run_seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([run_seed, _TAG_MLM, step])


def mlm_val_rng(data: DataSpec) -> np.random.Generator:
    return np.random.default_rng([data.seed, _TAG_MLM, 1 << 20])


_TAG_PREFIX = 0x707265


def prefix_split(windows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs (B, T), targets (B, T) with -100 inside the prefix, prefix lengths (B,)) of
    (B, T+1) token windows."""
    B, T = windows.shape[0], windows.shape[1] - 1
    prefix = rng.integers(1, T, B) if T > 1 else np.ones(B, dtype=np.int64)
    targets = windows[:, 1:].copy()
    targets[np.arange(T)[None, :] < (prefix - 1)[:, None]] = -100
    return windows[:, :-1], targets, prefix


def prefix_train_rng(run_seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([run_seed, _TAG_PREFIX, step])


def prefix_val_rng(data: DataSpec) -> np.random.Generator:
    return np.random.default_rng([data.seed, _TAG_PREFIX, 1 << 20])


def eval_span(lengths: tuple[int, ...]) -> int:
    """K: the segment length (in multiples of seq_len) that every evaluation length divides."""
    return math.lcm(*lengths)


def long_segments(source, data: DataSpec, K: int) -> np.ndarray:
    """(n, K·T+1) contiguous held-out segments holding the same tokens for every length.

    markov: the validation stream regenerated at window length K·T (independent of the run seed,
    stationary start, the same chain); text/tokens: the validation windows are consecutive
    stretches of one stream, rejoined and re-cut. Raises SpecError(data.val_tokens) when the
    held-out set holds no segment."""
    T = data.seq_len
    n = data.val_tokens // (K * T)
    if data.source == "markov":
        if n >= 1:
            from .data import MarkovSource

            long = replace(data, seq_len=K * T, val_tokens=n * K * T + 1)
            return MarkovSource(long, 0).val[:n]
    else:
        val = source.val  # (n_val, T+1)
        stream = np.concatenate([val[:, :-1].ravel(), val[-1:, -1]])
        n = (len(stream) - 1) // (K * T)
        if n >= 1:
            idx = np.arange(n)[:, None] * K * T + np.arange(K * T + 1)[None, :]
            return stream[idx]
    raise SpecError(
        "data.val_tokens",
        f"{data.val_tokens} held-out tokens hold no segment of "
        f"{K}·seq_len = {K * T} tokens for train.eval_lengths; "
        f"raise data.val_tokens to at least {K * T}",
    )


def windows_at(segments: np.ndarray, k: int, T: int) -> np.ndarray:
    """(n·K/k, k·T+1) non-overlapping windows of length k·T (+1 target) of each segment."""
    L = k * T
    per = (segments.shape[1] - 1) // L
    idx = np.arange(per)[:, None] * L + np.arange(L + 1)[None, :]
    return segments[:, idx].reshape(-1, L + 1)
