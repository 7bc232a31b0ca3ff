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

text/tokens: the training stream is cut into non-overlapping windows of T+1 tokens (stride T)
visited in a fresh seeded permutation each epoch; epochs = windows consumed / windows per epoch.
The validation set is the first ceil(val_tokens / T) windows of the validation stream.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import sysconfig
from pathlib import Path

import numpy as np

from .spec import DataSpec, SpecError

DEFAULT_CORPUS_MAX_BYTES = 8 << 20      # train bytes read from the stdlib (fast, ~0.1 s)
DEFAULT_VAL_MAX_BYTES = 2 << 20
VAL_BUCKETS = 10                         # 1 in 10 files goes to validation
_MARKOV_CHUNK = 512                      # windows generated per vectorised chunk
_COMPARE_MAX_VOCAB = 128                 # sample by row comparison up to this V, else bisect
_TAG_TRAIN, _TAG_VAL, _TAG_TABLE, _TAG_PERM = 1, 2, 3, 4


# --------------------------------------------------------------------------- markov

@functools.lru_cache(maxsize=8)
def _markov_table(vocab: int, order: int, alpha: float, seed: int):
    """(P (C, V) transition rows, π (C,) stationary distribution of contexts), C = V**order.
    Context index of (x_1..x_k) = Σ x_j·V^(k-j); the next context is (c·V + y) mod C."""
    rng = np.random.default_rng([seed, _TAG_TABLE])
    n_ctx = vocab ** order
    P = rng.dirichlet(np.full(vocab, alpha), size=n_ctx)                  # (C, V)
    P = np.nan_to_num(P, nan=0.0)
    bad = P.sum(axis=1) <= 0
    P[bad] = 1.0 / vocab
    P /= P.sum(axis=1, keepdims=True)
    nxt = (np.arange(n_ctx)[:, None] * vocab + np.arange(vocab)[None, :]) % n_ctx   # (C, V)
    pi: np.ndarray = np.full(n_ctx, 1.0 / n_ctx)
    for _ in range(100_000):
        new = np.bincount(nxt.ravel(), weights=(pi[:, None] * P).ravel(), minlength=n_ctx)
        new = 0.5 * (new + pi)           # lazy chain: same π, no periodicity trouble
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
    """Exact entropy rate in nats/token of the markov source: the irreducible loss."""
    if data.source != "markov":
        raise SpecError("data.source", f"true_entropy is known only for the markov source, "
                                       f"not {data.source!r}")
    P, pi = _markov_table(data.vocab_size, data.order, float(data.concentration), data.seed)
    return float((pi * _entropy(P, axis=1)).sum())


def markov_loss_floor(data: DataSpec) -> float:
    """Exact minimum expected loss per token of a stationary window of seq_len predictions."""
    V, k, T = data.vocab_size, data.order, data.seq_len
    P, pi = _markov_table(V, k, float(data.concentration), data.seed)
    joint = pi.reshape((V,) * k)
    H = [0.0]                                       # H[j]: entropy of j-grams, j = 0..k
    for j in range(1, k + 1):
        marg = joint.sum(axis=tuple(range(k - j))) if j < k else joint
        H.append(float(_entropy(marg.ravel())))
    rate = true_entropy(data)
    # position t (1..T) predicts x_t from min(t, k) previous symbols
    cond = [H[j + 1] - H[j] if j < k else rate for j in (min(t, k) for t in range(1, T + 1))]
    return float(sum(cond) / T)


class MarkovSource:
    def __init__(self, data: DataSpec, run_seed: int):
        self.data = data
        self.T = data.seq_len
        self.run_seed = run_seed
        V, k = data.vocab_size, data.order
        P, pi = _markov_table(V, k, float(data.concentration), data.seed)
        n_ctx = V ** k
        # Row-offset CDFs: one searchsorted over the flat array samples every row at once.
        cdf = np.cumsum(P, axis=1)
        cdf[:, -1] = 1.0
        self._cdf = cdf
        self._flat_cdf = (cdf + np.arange(n_ctx)[:, None]).ravel() if V > _COMPARE_MAX_VOCAB else None
        self._pi_cdf = np.cumsum(pi)
        self._pi_cdf[-1] = 1.0
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self.unique_train_tokens = math.inf
        n_val = math.ceil(data.val_tokens / self.T)
        self.val = self._windows(_TAG_VAL, 0, n_val)

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

    def _generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        V, k, T = self.data.vocab_size, self.data.order, self.T
        n_ctx = V ** k
        out = np.empty((n, T + 1), dtype=np.int64)
        ctx = np.minimum(np.searchsorted(self._pi_cdf, rng.random(n), side="right"), n_ctx - 1)
        for j in range(k):                          # decode the first k symbols from the context
            if j < T + 1:
                out[:, j] = (ctx // V ** (k - 1 - j)) % V
        u = rng.random((max(T + 1 - k, 0), n))                              # (T+1-k, n)
        for t in range(k, T + 1):
            if V <= _COMPARE_MAX_VOCAB:     # count CDF entries <= u in each row: cache-friendly
                y = (u[t - k][:, None] >= self._cdf[ctx]).sum(axis=1)
            else:                           # one binary search over the row-offset flat CDF
                assert self._flat_cdf is not None           # built when V > _COMPARE_MAX_VOCAB
                y = np.searchsorted(self._flat_cdf, ctx + u[t - k], side="right") - ctx * V
            np.clip(y, 0, V - 1, out=y)
            out[:, t] = y
            ctx = (ctx * V + y) % n_ctx
        return out

    def _windows(self, tag: int, start: int, n: int) -> np.ndarray:
        parts, pos = [], start
        while pos < start + n:
            c, off = divmod(pos, _MARKOV_CHUNK)
            take = min(_MARKOV_CHUNK - off, start + n - pos)
            parts.append(self._chunk(tag, c)[off:off + take])
            pos += take
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def batch(self, position: int, batch_size: int) -> np.ndarray:
        return self._windows(_TAG_TRAIN, position, batch_size)

    def epochs(self, position: int) -> float:
        return 0.0

    def params(self) -> dict:
        return {"true_entropy": true_entropy(self.data),
                "true_loss_floor": markov_loss_floor(self.data), "unique_tokens": "inf"}


# --------------------------------------------------------------------------- text / tokens

class WindowSource:
    """Non-overlapping windows of a token stream, one seeded permutation per epoch."""

    def __init__(self, train: np.ndarray, val: np.ndarray, data: DataSpec, run_seed: int,
                 info: dict):
        T = data.seq_len
        self.data, self.T, self.run_seed, self.info = data, T, run_seed, info
        self.train = train
        self.n_windows = (len(train) - 1) // T
        if self.n_windows < 1:
            raise SpecError("data.paths", f"the training split has {len(train)} tokens, less "
                                          f"than one window of seq_len+1 = {T + 1}; add data")
        n_val = math.ceil(data.val_tokens / T)
        if len(val) < n_val * T + 1:
            raise SpecError("data.val_tokens", f"the validation split has {len(val)} tokens, "
                                               f"fewer than val_tokens={data.val_tokens} (+1); "
                                               "lower val_tokens or add validation files")
        idx = np.arange(n_val)[:, None] * T + np.arange(T + 1)[None, :]
        self.val = np.asarray(val[idx], dtype=np.int64)                      # (n_val, T+1)
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
        for i in range(batch_size):                 # usually one epoch; cheap per batch
            epoch, j = divmod(position + i, self.n_windows)
            ids[i] = self._perm(epoch)[j]
        idx = ids[:, None] * self.T + np.arange(self.T + 1)[None, :]
        return np.asarray(self.train[idx], dtype=np.int64)

    def epochs(self, position: int) -> float:
        return position / self.n_windows

    def params(self) -> dict:
        return {"unique_tokens": int(self.unique_train_tokens), **self.info}


def _stdlib_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in ("site-packages", "dist-packages", "__pycache__")
                             and not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return root, files


def _user_files(paths: tuple[str, ...]) -> list[tuple[str, Path]]:
    out = []
    for i, p in enumerate(paths):
        path = Path(p).expanduser()
        if path.is_file():
            out.append((f"{i}/{path.name}", path))
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(filenames):
                    if not f.startswith("."):
                        full = Path(dirpath) / f
                        out.append((f"{i}/{full.relative_to(path).as_posix()}", full))
        else:
            raise SpecError("data.paths", f"{p!r} does not exist; name existing files or "
                                          "directories, or leave paths empty for the built-in corpus")
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


def _read(files: list[Path], cap: int | None) -> tuple[np.ndarray, int]:
    """(bytes of the files in order, up to `cap`; how many files were read)."""
    chunks, total = [], 0
    for f in files:
        b = f.read_bytes()
        if cap is not None and total + len(b) > cap:
            b = b[:cap - total]
        chunks.append(np.frombuffer(b, dtype=np.uint8))
        total += len(b)
        if cap is not None and total >= cap:
            break
    return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)), len(chunks)


@functools.lru_cache(maxsize=4)
def _text_corpus(paths: tuple[str, ...]):
    if paths:
        named = _user_files(paths)
        cap, val_cap = None, None
    else:
        root, files = _stdlib_files()
        named = [(f.relative_to(root).as_posix(), f) for f in files]
        cap, val_cap = DEFAULT_CORPUS_MAX_BYTES, DEFAULT_VAL_MAX_BYTES
    if len(named) < 2:
        raise SpecError("data.paths", f"found {len(named)} file(s); splitting train/validation "
                                      "by file needs at least two files")
    train_i, val_i = split_files([n for n, _ in named])
    if not train_i:
        raise SpecError("data.paths", "every file went to validation; add more files")
    train, n_train = _read([named[i][1] for i in train_i], cap)
    val, n_val = _read([named[i][1] for i in val_i], val_cap)
    digest = hashlib.sha1(train.tobytes()).hexdigest()[:12] + hashlib.sha1(val.tobytes()).hexdigest()[:12]
    info = {"data_hash": digest, "train_files": n_train, "val_files": n_val}
    return train, val, info


def _token_files(data: DataSpec):
    d = Path(data.paths[0]).expanduser()
    for name in ("train.bin", "val.bin"):
        if not (d / name).is_file():
            raise SpecError("data.paths", f"{d / name} does not exist; the tokens source needs a "
                                          "directory holding train.bin and val.bin (uint16)")
    train = np.memmap(d / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(d / "val.bin", dtype=np.uint16, mode="r")
    for name, arr in (("val.bin", val), ("train.bin", train[: 64 << 20])):
        if len(arr) and int(arr.max()) >= data.vocab_size:
            raise SpecError("data.vocab_size", f"{name} holds token {int(arr.max())} >= "
                                               f"vocab_size {data.vocab_size}; raise vocab_size")
    return train, val, {"train_file_tokens": len(train), "val_file_tokens": len(val)}


def make_source(data: DataSpec, run_seed: int):
    """The source of one run: `.batch(position, B)`, `.val`, `.epochs(position)`, `.params()`."""
    if data.source == "markov":
        return MarkovSource(data, run_seed)
    if data.source == "text":
        train, val, info = _text_corpus(tuple(data.paths))
        return WindowSource(train, val, data, run_seed, info)
    train, val, info = _token_files(data)
    return WindowSource(train, val, data, run_seed, info)


def write_tokens(path: str | os.PathLike, tokens) -> None:
    """Write a nanoGPT-style uint16 token file (for tests and tiny preprocessing scripts)."""
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError("tokens must lie in [0, 65535] to fit uint16")
    arr.astype(np.uint16).tofile(path)
