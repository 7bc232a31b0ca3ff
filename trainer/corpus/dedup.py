"""Document keys, the held-out split, and deduplication.

- Exact duplicates: the same text after normalisation (lower case, runs of whitespace as one
  space) has the same 128-bit BLAKE2b key; only the first copy is kept.
- The split: a document is validation when the first 64 bits of its key, as a fraction of 2^64,
  fall below the validation fraction. It depends on the text alone (stable across runs, file
  order and machines), and exact duplicates always land on the same side.
- Near duplicates: MinHash signatures (datasketch, 128 permutations) of the set of word 5-gram
  shingles, indexed by MinHash LSH at Jaccard 0.8 (Lee et al. 2022's setting); an LSH candidate
  counts only when the signatures agree on at least that fraction. Validation documents are
  indexed first, so a training document that near-duplicates a validation document is dropped
  (no leak from train into the held-out text), then each training document against those kept.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import Any

import numpy as np

NEAR_THRESHOLD = 0.8  # estimated Jaccard similarity of shingle sets at which two docs are near-duplicates
NUM_PERM = 128  # MinHash permutations
SHINGLE_WORDS = 5  # words per shingle
MINHASH_SEED = 1
_WORD = re.compile(r"\w+")
_MIX = np.uint64(0x100000001B3)  # FNV prime: combines word hashes into shingle hashes


def normalize(text: str) -> str:
    """Lower case, whitespace runs as one space, no leading/trailing space."""
    return " ".join(text.lower().split())


def doc_key(text: str) -> bytes:
    """128-bit key of the normalised text (exact-duplicate identity and split hash)."""
    return hashlib.blake2b(normalize(text).encode("utf-8", "replace"), digest_size=16).digest()


def is_validation(key: bytes, fraction: float) -> bool:
    return int.from_bytes(key[:8], "big") < fraction * 2.0**64


def in_sample(key: bytes, rate: float) -> bool:
    """A seeded Bernoulli(rate) choice from bits of the key the split does not use."""
    return rate >= 1.0 or int.from_bytes(key[8:16], "big") < rate * 2.0**64


def shingle_hashes(text: str, k: int = SHINGLE_WORDS) -> np.ndarray:
    """Distinct 32-bit hashes of the word k-grams of the lower-cased text (a shorter text: one
    shingle of all its words). Word hashes are CRC-32, stable across processes and machines."""
    words = _WORD.findall(text.lower())
    h = np.fromiter((zlib.crc32(w.encode("utf-8", "replace")) for w in words), np.uint64, len(words))
    if len(h) >= k:
        sh = h[: len(h) - k + 1].copy()
        for j in range(1, k):
            sh = sh * _MIX ^ h[j : len(h) - k + 1 + j]
    else:  # fewer words than one shingle: one shingle of them all (none for no words)
        sh = h[:1].copy()
        for j in range(1, len(h)):
            sh = sh * _MIX ^ h[j : j + 1]
    return np.unique((sh ^ (sh >> np.uint64(32))) & np.uint64(0xFFFFFFFF))


class MinHasher:
    """MinHash signatures (datasketch) with one fixed set of permutations."""

    def __init__(self, num_perm: int = NUM_PERM, seed: int = MINHASH_SEED):
        from datasketch import MinHash

        self._cls = MinHash
        self.num_perm = num_perm
        self._template = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)

    def signature(self, text: str) -> np.ndarray | None:
        """(num_perm,) uint32 signature; None for a text without words."""
        shingles = shingle_hashes(text)
        if not len(shingles):
            return None
        m = self._cls(
            num_perm=self.num_perm,
            hashfunc=int,
            permutations=self._template.permutations,
            scheme="affine32",
        )
        m.update_batch(shingles.tolist())
        return np.asarray(m.hashvalues, dtype=np.uint32)


class NearDuplicateIndex:
    """MinHash LSH over the signatures of kept documents (datasketch's MinHashLSH)."""

    def __init__(self, threshold: float = NEAR_THRESHOLD, num_perm: int = NUM_PERM):
        from datasketch import LeanMinHash, MinHashLSH

        self._lean = LeanMinHash
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._sigs: dict[Any, np.ndarray] = {}

    def _sketch(self, sig: np.ndarray):
        return self._lean(seed=MINHASH_SEED, hashvalues=sig, scheme="affine32")

    def match(self, sig: np.ndarray) -> Any | None:
        """The smallest key of an indexed document with estimated Jaccard >= threshold, or None."""
        hits = [
            key
            for key in self._lsh.query(self._sketch(sig))
            if float(np.mean(self._sigs[key] == sig)) >= self.threshold
        ]
        return min(hits) if hits else None

    def add(self, key: Any, sig: np.ndarray) -> None:
        self._lsh.insert(key, self._sketch(sig), check_duplication=False)
        self._sigs[key] = sig


def near_duplicates(
    sigs: list[np.ndarray | None], is_val: list[bool], keep: list[bool], threshold: float = NEAR_THRESHOLD
) -> tuple[list[int], int]:
    """Documents (indices) to drop as near duplicates, and how many of those are training
    documents that near-duplicate a validation document. `keep`: documents still in play after
    exact deduplication. Validation documents go first, each split in document order."""
    index = NearDuplicateIndex(threshold, len(next((s for s in sigs if s is not None), [0] * NUM_PERM)))
    drop, leaked = [], 0
    for want_val in (True, False):
        for i, sig in enumerate(sigs):
            if not keep[i] or is_val[i] != want_val or sig is None:
                continue
            hit = index.match(sig)
            if hit is None:
                index.add(i, sig)
                continue
            drop.append(i)
            leaked += not want_val and is_val[hit]
    return sorted(drop), leaked
