"""`ingest`: files -> documents -> held-out split -> dedup -> tokenizer -> token files.

Order matters (Lee et al. 2022): documents are split into validation and training by a hash of
their text BEFORE anything is learned from the data, duplicates are removed (a training document
that duplicates a validation document is dropped from training), and the tokenizer is trained on
the training split only.

Passes, each streaming: (1) read every input once, spooling each new document's UTF-8 text to a
temporary file and keeping only its key, split bit and MinHash signature (~0.7 KB per document,
never the text); (2) near-duplicate decisions on the signatures; (3) tokenizer training on a
sample of the kept training text read back from the spool; (4) encoding in parallel batches
into the token files, and the xz reference on the validation text in a second thread. Memory is
bounded by one batch (ENCODE_BATCH_CHARS), the tokenizer trainer's word counts and the per-document
keys and signatures. Everything is written to a temporary folder beside DIR and renamed into
place at the end (store.publish). Same inputs and settings -> byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import lzma
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import bpe, store
from .dedup import MinHasher, doc_key, in_sample, is_validation, near_duplicates
from .errors import CorpusError, IngestError
from .readers import InputFile, ReadStats, read_documents

DEFAULT_VOCAB = 1024  # sized for CPU studies (configs/corpus.yaml); real corpora: 32000-65535
DEFAULT_VAL_FRACTION = 0.02
DEDUP_MODES = ("near", "exact", "none")
XZ_MAX_BYTES = 256 << 20  # validation bytes the compressor reference reads at most
XZ_PRESET = 9 | lzma.PRESET_EXTREME  # xz -9e: its strongest level


@dataclass(frozen=True)
class IngestSettings:
    """What shapes the output besides the inputs (recorded in meta.json)."""

    vocab_size: int = DEFAULT_VOCAB
    val_fraction: float = DEFAULT_VAL_FRACTION
    dedup: str = "near"
    text_field: str = "text"
    dtype: str = "auto"  # auto: uint16 when vocab_size <= 65535, else uint32
    tokenizer_sample_bytes: int = bpe.TOKENIZER_SAMPLE_BYTES

    def check(self) -> None:
        v = self.vocab_size
        if v < bpe.MIN_VOCAB:
            raise IngestError(
                "--vocab-size",
                f"{v} is too small: byte-level BPE needs {bpe.MIN_VOCAB} (256 bytes and the "
                "end-of-document token); use at least 257 (typical: 4096-65535)",
            )
        top = store.UINT16_MAX_VOCAB if self.dtype == "uint16" else store.UINT32_MAX_VOCAB
        if v > top:
            dt = "uint16" if self.dtype == "uint16" else "uint32"
            fix = "or drop --dtype uint16 (uint32 ids)" if dt == "uint16" else "(the largest token ids)"
            raise IngestError(
                "--vocab-size", f"{v} token ids do not fit {dt} (at most {top}); lower --vocab-size {fix}"
            )
        if not 0 < self.val_fraction < 0.5:
            raise IngestError(
                "--val-fraction", f"{self.val_fraction} must be > 0 and < 0.5 (typical: 0.005-0.05)"
            )
        if self.dedup not in DEDUP_MODES:
            raise IngestError("--dedup", f"{self.dedup!r}: use one of {', '.join(DEDUP_MODES)}")
        if self.dtype not in ("auto", "uint16", "uint32"):
            raise IngestError("--dtype", f"{self.dtype!r}: use auto, uint16 or uint32")
        if not self.text_field:
            raise IngestError("--text-field", "must not be empty (the jsonl field / parquet column)")

    @property
    def resolved_dtype(self) -> str:
        return store.dtype_for(self.vocab_size) if self.dtype == "auto" else self.dtype


@dataclass
class IngestReport:
    """What `ingest` did: meta.json's content, whether DIR was already up to date, notes for the
    user, and seconds per phase (not in meta.json: reruns must be byte-identical)."""

    meta: dict[str, Any]
    up_to_date: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Docs:
    """Pass 1: per unique document, where its text is in the spool and what dedup needs."""

    spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes) in the spool
    keys: list[bytes] = field(default_factory=list)
    is_val: list[bool] = field(default_factory=list)
    sigs: list[np.ndarray | None] = field(default_factory=list)
    docs_read: int = 0
    empty: int = 0
    duplicates_exact: int = 0


def hash_inputs(files: list[InputFile]) -> str:
    """Content hash of the inputs: every file's name (relative to its argument), size and bytes."""
    h = hashlib.sha256(b"scalelab-inputs/1")
    for f in files:
        h.update(f"\0{f.name}\0{f.size}\0".encode())
        h.update(bytes.fromhex(store.sha256_file(f.path)))
    return h.hexdigest()


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _check_out(out: Path) -> dict[str, Any] | None:
    """meta.json of the corpus already at `out` (None: nothing or a broken corpus there).
    A folder there that is not a corpus is never replaced."""
    if not out.exists():
        return None
    if not out.is_dir() or (any(out.iterdir()) and not (out / "meta.json").is_file()):
        raise IngestError(
            "--out", f"{out} exists and is not a scalelab corpus folder; name a new or empty folder"
        )
    try:
        return store.verify(out)
    except CorpusError:
        return None


def ingest(
    files: list[InputFile],
    out: str | os.PathLike,
    settings: IngestSettings,
    *,
    progress: bool = True,
    force: bool = False,
    source: str = "files",
) -> IngestReport:
    """Ingest `files` into the corpus folder `out`. Raises IngestError (naming the flag) on bad
    input, before anything is written there."""
    settings.check()
    out = Path(out).expanduser()
    inside = out.resolve()
    files = [f for f in files if inside not in f.path.resolve().parents]  # never DIR's own files
    if not files:
        raise IngestError("PATH", "no files found; name files or folders holding text")
    t0 = time.perf_counter()
    inputs_hash = hash_inputs(files)
    old = _check_out(out)
    wanted = {"inputs_hash": inputs_hash, "settings": dataclasses.asdict(settings)}
    if old is not None and not force and all(old.get(k) == v for k, v in wanted.items()):
        return IngestReport(old, up_to_date=True, notes=[f"{out} is up to date (same inputs and settings)"])
    notes = []
    if old is not None and old.get("inputs_hash") != inputs_hash:
        notes.append(
            f"inputs changed since {out} was written (inputs hash {old['inputs_hash'][:12]} -> "
            f"{inputs_hash[:12]}): writing a new corpus; studies on it get a new fingerprint"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.ingest-", dir=out.parent))
    try:
        report = _ingest_into(tmp, files, settings, progress, source)
        report.meta["inputs_hash"] = inputs_hash
        _check_unchanged(files)
        store.write_meta(tmp, report.meta)
        store.publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.notes[:0] = notes
    report.seconds["total_s"] = time.perf_counter() - t0
    return report


def _check_unchanged(files: list[InputFile]) -> None:
    for f in files:
        try:
            size = f.path.stat().st_size
        except OSError:
            size = -1
        if size != f.size:
            raise IngestError("PATH", f"{f.path} changed while it was read; run the ingest again")


def _ingest_into(
    tmp: Path, files: list[InputFile], settings: IngestSettings, progress: bool, source: str
) -> IngestReport:
    stats = ReadStats()
    spool = tmp / "docs.spool"
    seconds: dict[str, float] = {}
    with _progress(progress) as bar:
        t = time.perf_counter()
        docs = _read_pass(files, settings, spool, stats, bar)
        drop, leaked = _dedup_near(docs, settings)
        kept = [i for i in range(len(docs.keys)) if i not in drop]
        seconds["read_dedup_s"] = time.perf_counter() - t
        train_i = [i for i in kept if not docs.is_val[i]]
        val_i = [i for i in kept if docs.is_val[i]]
        _check_split(docs, stats, train_i, val_i, settings)
        t = time.perf_counter()
        tok, sample_bytes = _train_tokenizer(spool, docs, train_i, settings, bar)
        tok.save(str(tmp / "tokenizer.json"))
        seconds["tokenizer_s"] = time.perf_counter() - t
        t = time.perf_counter()
        encoded = _encode(tmp, spool, docs, train_i, val_i, tok, settings, bar)
        seconds["encode_s"] = time.perf_counter() - t
    spool.unlink()
    counts = {
        "n_docs": len(train_i),
        "n_docs_val": len(val_i),
        "docs_read": docs.docs_read,
        "empty_docs": docs.empty,
        "duplicates_exact": docs.duplicates_exact,
        "duplicates_near": len(drop),
        "duplicates_near_of_val": leaked,
        "files": stats.files,
        "skipped_binary": stats.skipped_binary,
        "skipped_unreadable": stats.skipped_unreadable,
        "skipped_records": stats.skipped_records,
        "replaced_bytes": stats.replaced_bytes,
        "tokenizer_sample_bytes": sample_bytes,
        "tokenizer_vocab_size": tok.get_vocab_size(),
    }
    meta = _meta(tmp, settings, source, counts, encoded)
    return IngestReport(meta, notes=list(stats.notes), seconds=seconds)


def _read_pass(files, settings: IngestSettings, spool: Path, stats: ReadStats, bar) -> _Docs:
    docs, seen = _Docs(), set()
    hasher = MinHasher() if settings.dedup == "near" else None
    task = bar.add_task("read + dedup", total=sum(f.size for f in files) or 1, info="")
    with open(spool, "wb") as out:
        offset = 0
        for text in read_documents(
            files,
            text_field=settings.text_field,
            stats=stats,
            spool_dir=spool.parent,
            on_file=lambda f: bar.update(task, advance=f.size, info=f"{docs.docs_read} docs"),
        ):
            docs.docs_read += 1
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates (JSON escapes): as '?'
                data = text.encode("utf-8", "replace")
                text = data.decode("utf-8")
            if not data.strip():
                docs.empty += 1
                continue
            key = doc_key(text)
            if settings.dedup != "none":
                if key in seen:
                    docs.duplicates_exact += 1
                    continue
                seen.add(key)
            out.write(data)
            docs.spans.append((offset, len(data)))
            offset += len(data)
            docs.keys.append(key)
            docs.is_val.append(is_validation(key, settings.val_fraction))
            docs.sigs.append(hasher.signature(text) if hasher else None)
    return docs


def _dedup_near(docs: _Docs, settings: IngestSettings) -> tuple[set[int], int]:
    if settings.dedup != "near":
        return set(), 0
    drop, leaked = near_duplicates(docs.sigs, docs.is_val, [True] * len(docs.sigs))
    docs.sigs = []  # no longer needed: free them before the tokenizer trains
    return set(drop), leaked


def _check_split(docs: _Docs, stats: ReadStats, train_i: list[int], val_i: list[int], s: IngestSettings):
    if not train_i and not val_i:
        raise IngestError(
            "PATH",
            f"the corpus is empty: {stats.files} file(s) read, {stats.skipped_binary} binary and "
            f"{stats.skipped_unreadable} unreadable skipped, {stats.skipped_records} records without "
            f"a string {s.text_field!r}, {docs.empty} empty document(s); name files or folders holding "
            "text (jsonl/parquet: set --text-field)",
        )
    if not val_i:
        raise IngestError(
            "--val-fraction",
            f"the validation split is empty: none of the {len(train_i)} documents fell into it at "
            f"--val-fraction {s.val_fraction:g}; raise --val-fraction or add documents",
        )
    if not train_i:
        raise IngestError(
            "--val-fraction",
            f"every one of the {len(val_i)} documents went to validation; lower --val-fraction or add documents",
        )


def _texts(spool: Path, docs: _Docs, indices: list[int]) -> Iterator[str]:
    with open(spool, "rb") as f:
        for i in indices:
            off, n = docs.spans[i]
            f.seek(off)
            yield f.read(n).decode("utf-8")


def _train_tokenizer(spool: Path, docs: _Docs, train_i: list[int], s: IngestSettings, bar):
    total = sum(docs.spans[i][1] for i in train_i)
    rate = min(1.0, s.tokenizer_sample_bytes / max(total, 1))
    sample = [i for i in train_i if in_sample(docs.keys[i], rate)] or train_i[:1]
    sample_bytes = sum(docs.spans[i][1] for i in sample)
    task = bar.add_task(
        "train tokenizer", total=None, info=f"BPE {s.vocab_size} on {sample_bytes / 1e6:.1f} MB"
    )
    tok = bpe.train_tokenizer(_texts(spool, docs, sample), s.vocab_size)
    bar.update(task, total=1, completed=1)
    return tok, sample_bytes


def _xz_bits_per_byte(spool: Path, docs: _Docs, val_i: list[int], result: dict[str, Any]) -> None:
    """xz -9e over the validation text (documents concatenated), in bits per byte."""
    comp, n, size = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=XZ_PRESET), 0, 0
    with open(spool, "rb") as f:
        for i in val_i:
            off, length = docs.spans[i]
            length = min(length, XZ_MAX_BYTES - n)
            if length <= 0:
                break
            f.seek(off)
            size += len(comp.compress(f.read(length)))
            n += length
    size += len(comp.flush())
    result.update(name="xz", level="-9e", bytes=n, compressed_bytes=size, bits_per_byte=8.0 * size / n)


def _encode(tmp, spool, docs: _Docs, train_i, val_i, tok, s: IngestSettings, bar) -> dict[str, Any]:
    dtype = np.dtype(s.resolved_dtype)
    xz: dict[str, Any] = {}

    def xz_reference() -> None:
        try:
            _xz_bits_per_byte(spool, docs, val_i, xz)
        except BaseException as e:  # noqa: BLE001 - re-raised in the ingest's thread below
            xz["error"] = e

    worker = threading.Thread(target=xz_reference, daemon=True)
    worker.start()
    out: dict[str, Any] = {"compressor": xz}
    try:
        for split, idx in (("val", val_i), ("train", train_i)):
            out[split] = _encode_split(tmp / f"{split}.bin", spool, docs, idx, tok, dtype, split, bar)
    finally:
        worker.join()  # also on failure: the spool it reads is removed after
    if "error" in xz:
        raise xz.pop("error")
    return out


def _encode_split(path: Path, spool: Path, docs: _Docs, idx: list[int], tok, dtype, split: str, bar):
    nbytes = sum(docs.spans[i][1] for i in idx)
    task = bar.add_task(f"encode {split}", total=len(idx), info=f"{nbytes / 1e6:.1f} MB")
    with open(path, "wb") as f:
        n, sha = bpe.encode_to(
            tok, _texts(spool, docs, idx), f, dtype, on_batch=lambda b, k: bar.update(task, advance=len(b))
        )
    return {"tokens": n, "sha256": sha, "bytes": nbytes}


def _meta(tmp: Path, s: IngestSettings, source: str, counts: dict, enc: dict) -> dict[str, Any]:
    train, val = enc["train"], enc["val"]
    return {
        "format": store.FORMAT,
        "source": source,
        "settings": dataclasses.asdict(s),
        **counts,
        "bytes": train["bytes"],
        "bytes_val": val["bytes"],
        "train_tokens": train["tokens"],
        "val_tokens": val["tokens"],
        # of the validation split (what val_bpb converts with); EOS tokens count, bytes of text only
        "bytes_per_token": val["bytes"] / val["tokens"],
        "bytes_per_token_train": train["bytes"] / train["tokens"],
        "vocab_size": s.vocab_size,
        "dtype": s.resolved_dtype,
        "eos_id": bpe.EOS_ID,
        "train_sha256": train["sha256"],
        "val_sha256": val["sha256"],
        "corpus_hash": store.corpus_hash(train["sha256"], val["sha256"]),
        "tokenizer_hash": store.sha256_file(tmp / "tokenizer.json"),
        "compressor": enc["compressor"],
        "compressor_bpb": enc["compressor"]["bits_per_byte"],
    }
