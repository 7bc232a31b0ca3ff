"""Token sources, all offline. Every batch is a pure function of (data spec, run seed, position),
so a resumed run regenerates exactly the batches an uninterrupted run would have seen.

A batch is a (B, T+1) int64 array of windows: inputs w[:, :-1], targets w[:, 1:].
Position = number of training windows (sequences) consumed so far.

- markov: an order-k Markov chain over V symbols, transition rows ~ Dirichlet(alpha) drawn from
  data.seed. Windows start from the stationary distribution of contexts, so every window is a
  stationary sample. Training windows come from a stream seeded by (data.seed, run seed), the
  validation windows from an independent stream seeded by data.seed alone (the same for every
  run of a study). `true_entropy` is the exact entropy rate H = Σ_c π(c)·H(P(·|c)); since the
  first k positions of a window see less context, the exact floor of the window loss is
  slightly higher: (H_k - H_1 + (T - k + 1)·H) / T with H_j the entropy of j-grams
  (`markov_loss_floor`).
- text: bytes (vocab 256) of the named files/directories, or by default the .py files of this
  Python's standard library (present on every machine, no download; the stdlib differs across
  Python versions, so the params record a hash of the corpus). Files go to validation when the
  sha1 of their relative path is 0 mod 10 (deterministic, split by FILE, never by windows).
- tokens: nanoGPT's uint16 memmaps `train.bin` and `val.bin` in one directory.
- corpus: the folder `scalelab data ingest` wrote (train.bin/val.bin as uint16 or uint32, its
  meta.json): checked against the content hashes the study was planned with; also logs
  `val_bpb` (bits per byte, tokenizer-independent) and epochs = tokens seen / train tokens.

text/tokens: the training stream is cut into non-overlapping windows of T+1 tokens (stride T)
visited in a fresh seeded permutation each epoch; epochs = windows consumed / windows per epoch.
The validation set is the first ceil(val_tokens / T) windows of the validation stream.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import stat
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .spec import DataSpec, SpecError

DEFAULT_CORPUS_MAX_BYTES = 8 << 20  # train bytes read from the stdlib (fast, ~0.1 s)
DEFAULT_VAL_MAX_BYTES = 2 << 20
USER_CORPUS_MAX_BYTES = 1 << 30  # text paths: train bytes read at most (then cut)
USER_VAL_MAX_BYTES = 256 << 20
VAL_BUCKETS = 10  # 1 in 10 files goes to validation
_MARKOV_CHUNK = 512  # windows generated per vectorised chunk
_COMPARE_MAX_VOCAB = 128  # sample by row comparison up to this V, else bisect
_TAG_TRAIN, _TAG_VAL, _TAG_TABLE, _TAG_PERM, _TAG_LEXICON = 1, 2, 3, 4, 5


# --------------------------------------------------------------------------- markov


@functools.lru_cache(maxsize=8)
def _markov_table(vocab: int, order: int, alpha: float, seed: int):
    """(P (C, V) transition rows, π (C,) stationary distribution of contexts), C = V**order.
    Context index of (x_1..x_k) = Σ x_j·V^(k-j); the next context is (c·V + y) mod C."""
    rng = np.random.default_rng([seed, _TAG_TABLE])
    n_ctx = vocab**order
    P = rng.dirichlet(np.full(vocab, alpha), size=n_ctx)  # (C, V)
    P = np.nan_to_num(P, nan=0.0)
    bad = P.sum(axis=1) <= 0
    P[bad] = 1.0 / vocab
    P /= P.sum(axis=1, keepdims=True)
    nxt = (np.arange(n_ctx)[:, None] * vocab + np.arange(vocab)[None, :]) % n_ctx  # (C, V)
    pi: np.ndarray = np.full(n_ctx, 1.0 / n_ctx)
    for _ in range(100_000):
        new = np.bincount(nxt.ravel(), weights=(pi[:, None] * P).ravel(), minlength=n_ctx)
        new = 0.5 * (new + pi)  # lazy chain: same π, no periodicity trouble
        delta = np.abs(new - pi).sum()
        pi = new
        if delta < 1e-14:
            break
    pi /= pi.sum()
    return P, pi


def _entropy(p: np.ndarray, axis=None) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis)


def true_entropy(data: DataSpec) -> float:
    """Exact entropy rate in nats/token of a synthetic source (markov, zipf): the irreducible loss."""
    if data.source == "zipf":
        lex = _zipf_lexicon_of(data)
        return float(_entropy(lex.probs) / (lex.probs * lex.lengths).sum())
    if data.source != "markov":
        raise SpecError(
            "data.source", f"true_entropy is known only for the markov and zipf sources, not {data.source!r}"
        )
    P, pi = _markov_table(data.vocab_size, data.order, float(data.concentration), data.seed)
    return float((pi * _entropy(P, axis=1)).sum())


def markov_loss_floor(data: DataSpec) -> float:
    """Exact minimum expected loss per token of a stationary window of seq_len predictions."""
    V, k, T = data.vocab_size, data.order, data.seq_len
    P, pi = _markov_table(V, k, float(data.concentration), data.seed)
    joint = pi.reshape((V,) * k)
    H = [0.0]  # H[j]: entropy of j-grams, j = 0..k
    for j in range(1, k + 1):
        marg = joint.sum(axis=tuple(range(k - j))) if j < k else joint
        H.append(float(_entropy(marg.ravel())))
    rate = true_entropy(data)
    # position t (1..T) predicts x_t from min(t, k) previous symbols
    cond = [H[j + 1] - H[j] if j < k else rate for j in (min(t, k) for t in range(1, T + 1))]
    return float(sum(cond) / T)


class _StreamSource:
    """Windows generated in seeded chunks: window i of a stream is a pure function of
    (data.seed, stream tag, i // chunk, run seed for training). Subclasses define _generate."""

    def __init__(self, data: DataSpec, run_seed: int):
        self.data = data
        self.T = data.seq_len
        self.run_seed = run_seed
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self.unique_train_tokens = math.inf

    def _init_val(self) -> None:
        self.val = self._windows(_TAG_VAL, 0, math.ceil(self.data.val_tokens / self.T))

    def _generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def _chunk(self, tag: int, index: int) -> np.ndarray:
        key = (tag, index)
        chunk = self._cache.get(key)
        if chunk is None:
            seeds = [self.data.seed, tag, index] + ([self.run_seed] if tag == _TAG_TRAIN else [])
            chunk = self._generate(np.random.default_rng(seeds), _MARKOV_CHUNK)
            if len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = chunk
        return chunk

    def _windows(self, tag: int, start: int, n: int) -> np.ndarray:
        parts, pos = [], start
        while pos < start + n:
            c, off = divmod(pos, _MARKOV_CHUNK)
            take = min(_MARKOV_CHUNK - off, start + n - pos)
            parts.append(self._chunk(tag, c)[off : off + take])
            pos += take
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def batch(self, position: int, batch_size: int) -> np.ndarray:
        return self._windows(_TAG_TRAIN, position, batch_size)

    def epochs(self, position: int) -> float:
        return 0.0

    def eval_metrics(self, val_loss: float) -> dict[str, float]:
        """Metrics logged beside val_loss (none for synthetic sources)."""
        return {}


class MarkovSource(_StreamSource):
    def __init__(self, data: DataSpec, run_seed: int):
        super().__init__(data, run_seed)
        V, k = data.vocab_size, data.order
        P, pi = _markov_table(V, k, float(data.concentration), data.seed)
        n_ctx = V**k
        # Row-offset CDFs: one searchsorted over the flat array samples every row at once.
        cdf = np.cumsum(P, axis=1)
        cdf[:, -1] = 1.0
        self._cdf = cdf
        self._flat_cdf = (cdf + np.arange(n_ctx)[:, None]).ravel() if V > _COMPARE_MAX_VOCAB else None
        self._pi_cdf = np.cumsum(pi)
        self._pi_cdf[-1] = 1.0
        self._init_val()

    def _generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        V, k, T = self.data.vocab_size, self.data.order, self.T
        n_ctx = V**k
        out = np.empty((n, T + 1), dtype=np.int64)
        ctx = np.minimum(np.searchsorted(self._pi_cdf, rng.random(n), side="right"), n_ctx - 1)
        for j in range(k):  # decode the first k symbols from the context
            if j < T + 1:
                out[:, j] = (ctx // V ** (k - 1 - j)) % V
        u = rng.random((max(T + 1 - k, 0), n))  # (T+1-k, n)
        for t in range(k, T + 1):
            if V <= _COMPARE_MAX_VOCAB:  # count CDF entries <= u in each row: cache-friendly
                y = (u[t - k][:, None] >= self._cdf[ctx]).sum(axis=1)
            else:  # one binary search over the row-offset flat CDF
                assert self._flat_cdf is not None  # built when V > _COMPARE_MAX_VOCAB
                y = np.searchsorted(self._flat_cdf, ctx + u[t - k], side="right") - ctx * V
            np.clip(y, 0, V - 1, out=y)
            out[:, t] = y
            ctx = (ctx * V + y) % n_ctx
        return out

    def params(self) -> dict:
        return {
            "true_entropy": true_entropy(self.data),
            "true_loss_floor": markov_loss_floor(self.data),
            "unique_tokens": "inf",
        }


# --------------------------------------------------------------------------- zipf


@dataclass(frozen=True)
class Lexicon:
    """A prefix-free lexicon: word r (rank r+1) is tokens[r, :lengths[r]], emitted with
    probability probs[r] ∝ (r+1)^-s. Prefix-free, so a stream of words decodes uniquely."""

    tokens: np.ndarray  # (K, max_len) int64, padded with -1
    lengths: np.ndarray  # (K,) int64
    probs: np.ndarray  # (K,) float64, sums to 1

    @functools.cached_property
    def index(self) -> dict[tuple, int]:
        return {tuple(self.tokens[r, : self.lengths[r]].tolist()): r for r in range(len(self.probs))}

    def decode(self, stream) -> tuple[list[int], list[int]]:
        """(word ranks, leftover partial word) of a token stream that starts at a word boundary."""
        index = self.index
        ids, cur = [], []
        for tok in np.asarray(stream).tolist():
            cur.append(tok)
            r = index.get(tuple(cur))
            if r is not None:
                ids.append(r)
                cur = []
        return ids, cur

    @functools.cached_property
    def prefix_log_probs(self) -> list[dict[tuple, float]]:
        """[j] -> {prefix of j tokens: log P(a word starts with it)}, j = 1..max_len."""
        out: list[dict[tuple, float]] = [{}]
        for j in range(1, self.tokens.shape[1] + 1):
            keep = self.lengths >= j
            pref, inv = np.unique(self.tokens[keep, :j], axis=0, return_inverse=True)
            mass = np.bincount(inv.ravel(), weights=self.probs[keep], minlength=len(pref))
            out.append({tuple(row.tolist()): float(np.log(m)) for row, m in zip(pref, mass)})
        return out


@functools.lru_cache(maxsize=4)
def _zipf_lexicon(vocab: int, size: int, exponent: float, min_len: int, max_len: int, seed: int) -> Lexicon:
    """Random token strings with uniform lengths in [min_len, max_len], drawn from data.seed;
    a candidate is kept when it is new, no kept word is its prefix and it is no kept word's prefix."""
    rng = np.random.default_rng([seed, _TAG_LEXICON])
    words: set[bytes] = set()
    prefixes: set[bytes] = set()
    kept: list[np.ndarray] = []
    while len(kept) < size:
        n = 2 * (size - len(kept)) + 16
        lengths = rng.integers(min_len, max_len + 1, size=n)
        cand = rng.integers(0, vocab, size=(n, max_len)).astype(np.uint16)
        for row, length in zip(cand, lengths):
            w = row[:length].tobytes()
            own = [w[: 2 * j] for j in range(min_len, length)]
            if w in words or w in prefixes or any(p in words for p in own):
                continue
            words.add(w)
            prefixes.update(own)
            kept.append(row[:length])
            if len(kept) == size:
                break
    tokens = np.full((size, max_len), -1, dtype=np.int64)
    for r, w in enumerate(kept):
        tokens[r, : len(w)] = w
    probs = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    return Lexicon(tokens, np.array([len(w) for w in kept], dtype=np.int64), probs / probs.sum())


def _zipf_lexicon_of(data: DataSpec) -> Lexicon:
    return _zipf_lexicon(
        data.vocab_size,
        data.lexicon_size,
        float(data.zipf_exponent),
        data.min_word_len,
        data.max_word_len,
        data.seed,
    )


def zipf_loss_floor(data: DataSpec) -> float:
    """Exact minimum expected loss per token of a zipf window (targets start at a word boundary,
    so only the word cut off at the window's end differs from the entropy rate). u[s]: probability
    that a word starts at target offset s (renewal); g[m]: expected -log P of a word's first m
    tokens (the whole word when m >= its length)."""
    lex, T = _zipf_lexicon_of(data), data.seq_len
    f = np.bincount(lex.lengths, weights=lex.probs, minlength=T + 1)[: T + 1]
    u = np.zeros(T)
    u[0] = 1.0
    for s in range(1, T):
        u[s] = sum(f[l] * u[s - l] for l in range(1, s + 1))
    logp = np.log(lex.probs)
    g = np.empty(lex.tokens.shape[1] + 1)
    prefix = lex.prefix_log_probs
    for m in range(1, len(g)):
        cut = np.array(
            [
                prefix[m][tuple(lex.tokens[r, :m].tolist())] if lex.lengths[r] > m else logp[r]
                for r in range(len(logp))
            ]
        )
        g[m] = -(lex.probs * cut).sum()
    room = np.minimum(T - np.arange(T), len(g) - 1)
    return float((u * g[room]).sum() / T)


class ZipfSource(_StreamSource):
    """Words of a prefix-free lexicon emitted i.i.d. with Zipf frequencies. Window = the last
    token of one word, then T tokens of fresh words (targets start at a word boundary)."""

    def __init__(self, data: DataSpec, run_seed: int):
        super().__init__(data, run_seed)
        self.lex = _zipf_lexicon_of(data)
        self._cdf = np.cumsum(self.lex.probs)
        self._cdf[-1] = 1.0
        self._words = math.ceil((self.T + data.max_word_len) / data.min_word_len)
        self._init_val()

    def sample_words(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, W) word ranks; every row spells at least T + max_word_len tokens."""
        u = rng.random((n, self._words))
        return np.minimum(np.searchsorted(self._cdf, u, side="right"), len(self._cdf) - 1)

    def spell(self, ids: np.ndarray) -> np.ndarray:
        """(n, T+1) windows from (n, W) word ranks."""
        toks = self.lex.tokens[ids]  # (n, W, max_len)
        flat = toks[toks >= 0]  # row-major: rows in order
        row_len = self.lex.lengths[ids].sum(axis=1)
        row_start = np.concatenate([[0], np.cumsum(row_len)[:-1]])
        first = row_start + self.lex.lengths[ids[:, 0]] - 1  # last token of word 0
        return flat[first[:, None] + np.arange(self.T + 1)[None, :]]

    def _generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.spell(self.sample_words(rng, n))

    def true_loss(self, windows: np.ndarray) -> float:
        """Mean loss of the true model on (n, T+1) windows, nats/token, by exact decoding."""
        prefix, logp = self.lex.prefix_log_probs, np.log(self.lex.probs)
        total = 0.0
        for w in windows:
            ids, rest = self.lex.decode(w[1:])
            total -= logp[ids].sum() + (prefix[len(rest)][tuple(rest)] if rest else 0.0)
        return total / (len(windows) * self.T)

    def params(self) -> dict:
        """true_entropy: the rate; true_loss_floor: its window version; val_true_loss: the true
        model's loss on this study's validation windows (the rate up to sampling noise)."""
        return {
            "true_entropy": true_entropy(self.data),
            "true_loss_floor": zipf_loss_floor(self.data),
            "val_true_loss": float(self.true_loss(self.val)),
            "unique_tokens": "inf",
        }


# --------------------------------------------------------------------------- text / tokens


class WindowSource:
    """Non-overlapping windows of a token stream, one seeded permutation per epoch."""

    def __init__(
        self,
        train: np.ndarray,
        val: np.ndarray,
        data: DataSpec,
        run_seed: int,
        info: dict,
        *,
        bytes_per_token: float = 0.0,
        epoch_tokens: int = 0,
    ):
        """bytes_per_token (of the validation split: val_bpb is logged) and epoch_tokens (epochs =
        training tokens seen / epoch_tokens): an ingested corpus (trainer/corpus/source.py)."""
        T = data.seq_len
        self.data, self.T, self.run_seed, self.info = data, T, run_seed, info
        self.bytes_per_token, self.epoch_tokens = bytes_per_token, epoch_tokens
        self.train = train
        self.n_windows = (len(train) - 1) // T
        if self.n_windows < 1:
            raise SpecError(
                "data.paths",
                f"the training split has {len(train)} tokens, less "
                f"than one window of seq_len+1 = {T + 1}; add data",
            )
        n_val = math.ceil(data.val_tokens / T)
        if len(val) < n_val * T + 1:
            raise SpecError(
                "data.val_tokens",
                f"the validation split has {len(val)} tokens, "
                f"fewer than val_tokens={data.val_tokens} (+1); "
                "lower val_tokens or add validation files",
            )
        idx = np.arange(n_val)[:, None] * T + np.arange(T + 1)[None, :]
        self.val = _check_vocab(np.asarray(val[idx], dtype=np.int64), data, "the validation split")
        self.unique_train_tokens = len(train)
        self._perm_cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        perm = self._perm_cache.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.data.seed, _TAG_PERM, self.run_seed, epoch])
            perm = rng.permutation(self.n_windows)
            self._perm_cache = {epoch: perm}
        return perm

    def batch(self, position: int, batch_size: int) -> np.ndarray:
        ids = np.empty(batch_size, dtype=np.int64)
        for i in range(batch_size):  # usually one epoch; cheap per batch
            epoch, j = divmod(position + i, self.n_windows)
            ids[i] = self._perm(epoch)[j]
        idx = ids[:, None] * self.T + np.arange(self.T + 1)[None, :]
        return _check_vocab(
            np.asarray(self.train[idx], dtype=np.int64),
            self.data,
            f"the training split (windows from {position})",
        )

    def epochs(self, position: int) -> float:
        if self.epoch_tokens:  # corpus: training tokens seen / training tokens available
            return position * self.T / self.epoch_tokens
        return position / self.n_windows

    def eval_metrics(self, val_loss: float) -> dict[str, float]:
        """Metrics logged beside val_loss: val_bpb (bits per byte) for an ingested corpus."""
        if not self.bytes_per_token:
            return {}
        from .corpus.source import bits_per_byte

        return {"val_bpb": bits_per_byte(val_loss, self.bytes_per_token)}

    def params(self) -> dict:
        return {"unique_tokens": int(self.unique_train_tokens), **self.info}


def _stdlib_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in ("site-packages", "dist-packages", "__pycache__") and not d.startswith(".")
        )
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return root, files


def _regular(path: Path) -> bool:
    """True for a regular file (after symlinks): FIFOs, devices and sockets are never read."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _user_files(paths: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Regular files of the named paths; inside directories other entries (FIFOs, sockets,
    links to devices) are skipped, a named one is an error."""
    out = []
    for i, p in enumerate(paths):
        path = Path(p).expanduser()
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(filenames):
                    full = Path(dirpath) / f
                    if not f.startswith(".") and _regular(full):
                        out.append((f"{i}/{full.relative_to(path).as_posix()}", full))
        elif _regular(path):
            out.append((f"{i}/{path.name}", path))
        elif path.exists():
            raise SpecError(
                "data.paths",
                f"{p!r} is not a regular file (a FIFO, device or socket); name regular files or directories",
            )
        else:
            raise SpecError(
                "data.paths",
                f"{p!r} does not exist; name existing files or "
                "directories, or leave paths empty for the built-in corpus",
            )
    return sorted(out)


def split_files(names: list[str]) -> tuple[list[int], list[int]]:
    """(train indices, val indices): a file is validation when sha1(name) % 10 == 0. With no
    such file, the file with the smallest hash is validation; a corpus needs two files."""
    h = [int(hashlib.sha1(n.encode()).hexdigest()[:12], 16) for n in names]
    val = [i for i, x in enumerate(h) if x % VAL_BUCKETS == 0]
    if not val and len(names) >= 2:
        val = [min(range(len(names)), key=h.__getitem__)]
    val_set = set(val)
    return [i for i in range(len(names)) if i not in val_set], val


def _read_regular(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file. Opened non-blocking and checked on the open
    descriptor, so a FIFO or device swapped in after the walk can neither hang nor flood us."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError("data.paths", f"{path} is not a regular file; remove it")
        return f.read(limit)


def _read(files: list[Path], cap: int) -> tuple[np.ndarray, int]:
    """(bytes of the files in order, up to `cap` in all; how many files were read)."""
    chunks, total = [], 0
    for f in files:
        b = _read_regular(f, cap - total)
        chunks.append(np.frombuffer(b, dtype=np.uint8))
        total += len(b)
        if total >= cap:
            break
    return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)), len(chunks)


@functools.lru_cache(maxsize=4)
def _text_corpus(paths: tuple[str, ...]):
    if paths:
        named = _user_files(paths)
        cap, val_cap = USER_CORPUS_MAX_BYTES, USER_VAL_MAX_BYTES
    else:
        root, files = _stdlib_files()
        named = [(f.relative_to(root).as_posix(), f) for f in files]
        cap, val_cap = DEFAULT_CORPUS_MAX_BYTES, DEFAULT_VAL_MAX_BYTES
    if len(named) < 2:
        raise SpecError(
            "data.paths",
            f"found {len(named)} file(s); splitting train/validation by file needs at least two files",
        )
    train_i, val_i = split_files([n for n, _ in named])
    if not train_i:
        raise SpecError("data.paths", "every file went to validation; add more files")
    train, n_train = _read([named[i][1] for i in train_i], cap)
    val, n_val = _read([named[i][1] for i in val_i], val_cap)
    digest = hashlib.sha1(train.tobytes()).hexdigest()[:12] + hashlib.sha1(val.tobytes()).hexdigest()[:12]
    info = {"data_hash": digest, "train_files": n_train, "val_files": n_val}
    return train, val, info


def _token_files(data: DataSpec):
    """train.bin and val.bin as read-only memmaps: nothing is read here; WindowSource reads the
    validation windows it uses and each training batch, and checks those tokens < vocab_size."""
    d = Path(data.paths[0]).expanduser()
    maps = {}
    for name in ("train.bin", "val.bin"):
        if not _regular(d / name):
            raise SpecError(
                "data.paths",
                f"{d / name} is not a regular file; the tokens source "
                "needs a directory holding train.bin and val.bin (uint16)",
            )
        if os.path.getsize(d / name) < 2:
            raise SpecError("data.paths", f"{d / name} holds no tokens; write uint16 tokens to it")
        maps[name] = np.memmap(d / name, dtype=np.uint16, mode="r")
    train, val = maps["train.bin"], maps["val.bin"]
    return train, val, {"train_file_tokens": len(train), "val_file_tokens": len(val)}


def _check_vocab(tokens: np.ndarray, data: DataSpec, what: str) -> np.ndarray:
    if tokens.size and int(tokens.max()) >= data.vocab_size:
        raise SpecError(
            "data.vocab_size",
            f"{what} holds token {int(tokens.max())} >= vocab_size {data.vocab_size}; raise vocab_size",
        )
    return tokens


def make_source(data: DataSpec, run_seed: int):
    """The source of one run: `.batch(position, B)`, `.val`, `.epochs(position)`, `.params()`."""
    if data.source == "markov":
        return MarkovSource(data, run_seed)
    if data.source == "zipf":
        return ZipfSource(data, run_seed)
    if data.source == "text":
        train, val, info = _text_corpus(tuple(data.paths))
        return WindowSource(train, val, data, run_seed, info)
    if data.source == "corpus":  # ingested (trainer/corpus), checked against the planned hashes
        from .corpus.source import open_corpus

        c = open_corpus(data)
        return WindowSource(c.train, c.val, data, run_seed, c.info, **c.options)
    train, val, info = _token_files(data)
    return WindowSource(train, val, data, run_seed, info)


def write_tokens(path: str | os.PathLike, tokens) -> None:
    """Write a nanoGPT-style uint16 token file (for tests and tiny preprocessing scripts)."""
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError("tokens must lie in [0, 65535] to fit uint16")
    arr.astype(np.uint16).tofile(path)
