"""The `corpus` data source: a folder written by `scalelab data ingest`, memory-mapped.

Its token files are checked against the content hashes the study was planned with (a changed
corpus is a new dataset, never silently the old one). Beside val_loss a run logs `val_bpb`, bits
per byte of the held-out text, which does not depend on the tokenizer; epochs count training
tokens seen over training tokens available. trainer/data.py serves the windows (WindowSource).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..spec import DataSpec
from .errors import CorpusError
from .store import read_meta


def bits_per_byte(nats_per_token: float, bytes_per_token: float) -> float:
    """Loss in bits per byte of text: nats/token x tokens/byte / ln 2 (comparable across
    tokenizers, unlike nats per token)."""
    return nats_per_token / bytes_per_token / math.log(2)


def corpus_spec(path: str | Path, **fields: Any) -> DataSpec:
    """The DataSpec of the corpus folder at `path`: vocab_size and content hashes from its
    meta.json (a given vocab_size must match), its splits checked against seq_len and val_tokens."""
    meta = read_meta(path)
    vocab = fields.pop("vocab_size", meta["vocab_size"])
    if vocab != meta["vocab_size"]:
        raise CorpusError(
            "data.vocab_size",
            f"the corpus at {path} has vocab_size {meta['vocab_size']} (its tokenizer's); remove "
            f"vocab_size or set it to {meta['vocab_size']}",
        )
    spec = DataSpec(
        source="corpus",
        path=str(Path(path).expanduser().resolve()),
        vocab_size=int(meta["vocab_size"]),
        corpus_hash=str(meta["corpus_hash"]),
        tokenizer_hash=str(meta["tokenizer_hash"]),
        **fields,
    )
    check_fits(spec, meta)
    return spec


def check_fits(data: DataSpec, meta: dict[str, Any]) -> None:
    """The validation split holds data.val_tokens (in windows of seq_len + 1) and the training
    split at least one window; raises CorpusError naming the key and the fix."""
    T = data.seq_len
    need = math.ceil(data.val_tokens / T) * T + 1
    if meta["val_tokens"] < need:
        raise CorpusError(
            "data.val_tokens",
            f"{data.val_tokens} held-out tokens (in windows of seq_len {T}: {need} tokens) do not "
            f"fit the corpus's validation split of {meta['val_tokens']} tokens; lower "
            f"data.val_tokens to at most {(meta['val_tokens'] - 1) // T * T} or ingest again "
            "with a larger --val-fraction",
        )
    if meta["train_tokens"] < T + 1:
        raise CorpusError(
            "data.path",
            f"the corpus's training split holds {meta['train_tokens']} tokens, less than one "
            f"window of seq_len+1 = {T + 1}; ingest more text",
        )


@dataclass(frozen=True)
class CorpusFiles:
    train: np.ndarray  # memmap, uint16 or uint32
    val: np.ndarray
    info: dict[str, Any]  # params logged with each run
    options: dict[str, Any]  # WindowSource's keyword options for a corpus


def open_corpus(data: DataSpec) -> CorpusFiles:
    """The token files of the corpus, as memmaps, after checking that it is the corpus (content
    and tokenizer) the study was planned with. Raises CorpusError naming data.path."""
    path, corpus_hash, tokenizer_hash = data.path, data.corpus_hash, data.tokenizer_hash
    meta = read_meta(path)
    if (meta["corpus_hash"], meta["tokenizer_hash"]) != (corpus_hash, tokenizer_hash):
        raise CorpusError(
            "data.path",
            f"the corpus at {path} changed since this study was planned (corpus hash "
            f"{meta['corpus_hash'][:12]}, planned {corpus_hash[:12]}): it is a new dataset; "
            "restore the old corpus, or run the study file again under a new study name",
        )
    d = Path(path).expanduser()
    dtype = np.dtype(meta["dtype"])
    info = {
        "corpus_hash": meta["corpus_hash"][:16],
        "tokenizer_hash": meta["tokenizer_hash"][:16],
        "train_tokens": int(meta["train_tokens"]),
        "bytes_per_token": float(meta["bytes_per_token"]),
        "compressor_bpb": meta["compressor_bpb"],
        "compressor": f"{meta['compressor']['name']} {meta['compressor']['level']}",
    }
    check_fits(data, meta)
    return CorpusFiles(
        train=np.memmap(d / "train.bin", dtype=dtype, mode="r"),
        val=np.memmap(d / "val.bin", dtype=dtype, mode="r"),
        info=info,
        options={
            "bytes_per_token": float(meta["bytes_per_token"]),
            "epoch_tokens": int(meta["train_tokens"]),
        },
    )
