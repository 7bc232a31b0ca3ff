"""A corpus folder on disk: `train.bin`, `val.bin` (token ids, uint16 when vocab_size <= 65535,
else uint32, each document followed by the end-of-document id 0), `tokenizer.json` (Hugging Face
`tokenizers`), `meta.json` (counts and content hashes).

Written whole to a temporary sibling folder and renamed into place, so a reader sees the old
corpus or the new one, never a mix; `read_meta` refuses a folder whose files do not match its
meta.json (half-written, truncated or edited), naming the fix. Reading imports nothing heavy:
a study's plan checks its corpus in milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import CorpusError

FORMAT = "scalelab-corpus/1"
FILES = ("train.bin", "val.bin", "tokenizer.json", "meta.json")
META_KEYS = (
    "format",
    "n_docs",
    "n_docs_val",
    "bytes",
    "bytes_val",
    "train_tokens",
    "val_tokens",
    "bytes_per_token",
    "duplicates_exact",
    "duplicates_near",
    "skipped_binary",
    "vocab_size",
    "dtype",
    "inputs_hash",
    "tokenizer_hash",
    "corpus_hash",
)
UINT16_MAX_VOCAB = 65535  # contract: uint16 ids when vocab_size <= 65535
UINT32_MAX_VOCAB = 2**32 - 1


def dtype_for(vocab_size: int) -> str:
    return "uint16" if vocab_size <= UINT16_MAX_VOCAB else "uint32"


def ingest_hint(path: str | os.PathLike) -> str:
    return (
        f"`scalelab data ingest PATH... --out {path} --vocab-size V` "
        f"(the Python stdlib corpus: `scalelab data ingest --python-stdlib --out {path}`)"
    )


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def corpus_hash(train_sha256: str, val_sha256: str) -> str:
    """The identity of the token data a study trains and evaluates on."""
    return hashlib.sha256(f"{FORMAT}:{train_sha256}:{val_sha256}".encode()).hexdigest()


def _half_written(path: Path, what: str) -> CorpusError:
    return CorpusError(
        "data.path",
        f"{path} is not a finished corpus ({what}): it is half-written, truncated or edited; "
        f"write it again with {ingest_hint(path)}",
    )


def read_meta(path: str | os.PathLike, field: str = "data.path") -> dict[str, Any]:
    """meta.json of a finished corpus folder, after checking that every file is there and that
    the token files hold exactly the tokens meta.json counts. Raises CorpusError naming `field`."""
    d = Path(path).expanduser()
    if not d.is_dir():
        what = "is not a folder" if d.exists() else "does not exist"
        raise CorpusError(field, f"{path} {what}; make the corpus with {ingest_hint(path)}")
    st = [os.stat(d / f) if (d / f).is_file() else None for f in FILES]
    return _read_meta_cached(str(d.resolve()), tuple((s.st_size, s.st_mtime_ns) if s else None for s in st))


@functools.lru_cache(maxsize=16)
def _read_meta_cached(path: str, stats: tuple) -> dict[str, Any]:
    d = Path(path)
    missing = [f for f, s in zip(FILES, stats) if s is None]
    if missing:
        raise _half_written(d, f"no {', '.join(missing)}")
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (ValueError, UnicodeDecodeError):
        raise _half_written(d, "meta.json is not valid JSON") from None
    absent = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if absent:
        raise _half_written(d, f"meta.json lacks {', '.join(absent)}")
    if meta["format"] != FORMAT:
        raise CorpusError("data.path", f"{d} holds corpus format {meta['format']!r}, not {FORMAT!r}; "
                        f"write it again with {ingest_hint(d)}")  # fmt: skip
    itemsize = 2 if meta["dtype"] == "uint16" else 4
    for name, key, (size, _) in (
        ("train.bin", "train_tokens", stats[0]),
        ("val.bin", "val_tokens", stats[1]),
    ):
        if size != meta[key] * itemsize:
            raise _half_written(
                d, f"{name} holds {size} bytes, meta.json says {meta[key]} {meta['dtype']} tokens"
            )
    return meta


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """read_meta, then the content hashes of the token files and the tokenizer (reads them all)."""
    d = Path(path).expanduser()
    meta = read_meta(d)
    if sha256_file(d / "tokenizer.json") != meta["tokenizer_hash"]:
        raise _half_written(d, "tokenizer.json does not match its hash in meta.json")
    got = corpus_hash(sha256_file(d / "train.bin"), sha256_file(d / "val.bin"))
    if got != meta["corpus_hash"]:
        raise _half_written(d, "train.bin/val.bin do not match corpus_hash in meta.json")
    return meta


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    text = json.dumps(meta, indent=1, sort_keys=True) + "\n"
    with open(folder / "meta.json", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def publish(tmp: Path, out: Path) -> None:
    """Move the finished folder `tmp` to `out` (replacing an older corpus there). Both are in
    one parent folder, so each step is a rename; a reader never sees a partial folder."""
    for name in FILES:
        fd = os.open(tmp / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
