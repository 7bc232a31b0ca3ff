"""The tokenizer: byte-level BPE trained with Hugging Face `tokenizers`, and batch encoding.

Byte-level (GPT-2's pre-tokenizer and 256-symbol byte alphabet), so every text encodes and
decodes back exactly, with no unknown token. Id 0 is `<|endoftext|>`, written after every
document (it stands for no bytes of text). Training reads a sample of the training documents
(TOKENIZER_SAMPLE_BYTES, chosen by their keys: deterministic); tokens are at most
MAX_TOKEN_LENGTH characters, which avoids the slow case of very long pre-tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import numpy as np

EOS = "<|endoftext|>"
EOS_ID = 0
TOKENIZER_SAMPLE_BYTES = 32 << 20  # above this many training bytes, the tokenizer trains on a sample
MAX_TOKEN_LENGTH = 16
MIN_VOCAB = 257  # 256 byte tokens and the end-of-document token
ENCODE_BATCH_CHARS = 4 << 20  # characters per encode_batch call (parallel inside `tokenizers`)


def new_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer of at most `vocab_size` tokens (fewer when the text has no
    more pairs to merge) trained on `texts`."""
    from tokenizers import pre_tokenizers, trainers

    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=MAX_TOKEN_LENGTH,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def batches(texts: Iterable[str], chars: int = ENCODE_BATCH_CHARS) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for t in texts:
        batch.append(t)
        size += len(t)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_to(
    tok: Any,
    texts: Iterable[str],
    out: IO[bytes],
    dtype: np.dtype,
    on_batch: Callable[[list[str], int], None] = lambda b, n: None,
) -> tuple[int, str]:
    """Encode documents in parallel batches and append their ids, each document followed by
    EOS, to `out`. Returns (tokens written, sha256 of the bytes written)."""
    digest = hashlib.sha256()
    total = 0
    for batch in batches(texts):
        seqs = [e.ids for e in tok.encode_batch_fast(batch, add_special_tokens=False)]  # one list each
        ends = np.cumsum(np.fromiter(map(len, seqs), np.int64, len(seqs)) + 1)
        ids = np.empty(int(ends[-1]), dtype=dtype)
        start = 0
        for seq, end in zip(seqs, ends.tolist()):
            ids[start : end - 1] = seq
            start = end
        ids[ends - 1] = EOS_ID
        data = ids.tobytes()
        out.write(data)
        digest.update(data)
        total += len(ids)
        on_batch(batch, len(ids))
    return total, digest.hexdigest()
