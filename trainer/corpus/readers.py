"""Documents from files: plain text (Markdown, code, anything that is not binary), `.jsonl`
records (one text field), `.parquet` rows (one text column), and gzip of any of those.

Streaming: a file is read in blocks and a plain-text file longer than DOC_MAX_CHARS is cut into
several documents at a blank line (else a line break) before that length, so no document and no
file is ever held whole; jsonl and parquet records are documents as they stand. A file whose
first block holds a NUL byte is binary (git's rule) and is skipped and counted; undecodable bytes
become U+FFFD and are counted. Files are visited in sorted order, so the document stream (and
everything downstream) is a pure function of the inputs.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import re
import shutil
import stat
import sysconfig
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import IngestError

BLOCK = 1 << 20  # bytes read at a time
DOC_MAX_CHARS = 1 << 20  # a longer plain-text file is cut into documents of at most this
SNIFF = 8000  # bytes checked for a NUL (git's heuristic for binary files)
_ESCAPED = re.compile("[\udc80-\udcff]")  # undecodable bytes, as surrogateescape leaves them
_SKIP_DIRS = ("__pycache__", "site-packages", "dist-packages")


@dataclass(frozen=True)
class InputFile:
    """A regular file to read: `name` is its path relative to the argument it came from (stable
    across machines and output directories), `path` where it is."""

    name: str
    path: Path
    size: int


@dataclass
class ReadStats:
    """What reading skipped or repaired (counted, never silent)."""

    files: int = 0
    skipped_binary: int = 0  # files with a NUL byte in their first block
    skipped_unreadable: int = 0  # corrupt gzip/parquet files
    skipped_records: int = 0  # jsonl lines that are not JSON objects with a string text field
    replaced_bytes: int = 0  # undecodable bytes replaced by U+FFFD
    notes: list[str] = field(default_factory=list)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def list_files(paths: list[str], suffixes: tuple[str, ...] = ()) -> list[InputFile]:
    """Regular files of the named files and folders (recursively, hidden entries, __pycache__
    and site-packages skipped), sorted by name; `suffixes` keeps only those endings. A named path
    that does not exist or is not a regular file/folder is an error naming it."""
    out: list[InputFile] = []
    for i, p in enumerate(paths):
        root = Path(p).expanduser()
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
                for f in sorted(filenames):
                    full = Path(dirpath) / f
                    if f.startswith(".") or (suffixes and not f.endswith(suffixes)) or not _regular(full):
                        continue
                    rel = full.relative_to(root).as_posix()
                    out.append(InputFile(f"{i}/{rel}", full, full.stat().st_size))
        elif _regular(root):
            out.append(InputFile(f"{i}/{root.name}", root, root.stat().st_size))
        elif root.exists():
            raise IngestError("PATH", f"{p!r} is not a regular file or a folder (a FIFO, device or socket)")
        else:
            raise IngestError("PATH", f"{p!r} does not exist; name existing files or folders")
    return sorted(out, key=lambda f: f.name)


def stdlib_root() -> Path:
    """The running interpreter's standard library (its .py files are a real corpus of ~30 MB of
    code and docstrings on every machine; site-packages is skipped)."""
    return Path(sysconfig.get_paths()["stdlib"])


def _kind(name: str) -> tuple[str, bool]:
    """(format, gzipped) from the file name: jsonl | parquet | text."""
    low = name.lower()
    gz = low.endswith(".gz")
    if gz:
        low = low[:-3]
    if low.endswith((".jsonl", ".ndjson")):
        return "jsonl", gz
    if low.endswith(".parquet"):
        return "parquet", gz
    return "text", gz


class _Decoder:
    """Incremental UTF-8 decoding: undecodable bytes become U+FFFD and are counted."""

    def __init__(self, stats: ReadStats):
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._stats = stats

    def __call__(self, data: bytes, final: bool = False) -> str:
        text, n = _ESCAPED.subn("\ufffd", self._dec.decode(data, final))
        self._stats.replaced_bytes += n
        return text


def _cut(buffer: str, final: bool) -> tuple[list[str], str]:
    """Documents of at most DOC_MAX_CHARS cut from the front of `buffer` (at a blank line, else
    a line break, else hard), and the rest; with `final`, the rest is a document too."""
    docs = []
    while len(buffer) > DOC_MAX_CHARS:
        head = buffer[:DOC_MAX_CHARS]
        at = head.rfind("\n\n")
        at = at + 2 if at > 0 else head.rfind("\n") + 1
        at = at if at > 0 else DOC_MAX_CHARS
        docs.append(buffer[:at])
        buffer = buffer[at:]
    if final:
        if buffer:
            docs.append(buffer)
        buffer = ""
    return docs, buffer


def _text_docs(f: IO[bytes], first: bytes, stats: ReadStats) -> Iterator[str]:
    dec, buffer, block = _Decoder(stats), "", first
    while block:
        docs, buffer = _cut(buffer + dec(block), final=False)
        yield from docs
        block = f.read(BLOCK)
    docs, _ = _cut(buffer + dec(b"", final=True), final=True)
    yield from docs


def _jsonl_docs(f: IO[bytes], name: str, text_field: str, stats: ReadStats) -> Iterator[str]:
    good = bad_field = 0
    keys: set[str] = set()
    dec = _Decoder(stats)
    for line in f:
        if not line.strip():
            continue
        try:
            rec = json.loads(dec(line, final=True))
        except ValueError:
            stats.skipped_records += 1
            continue
        value = rec.get(text_field) if isinstance(rec, dict) else None
        if not isinstance(value, str):
            stats.skipped_records += 1
            bad_field += 1
            if isinstance(rec, dict) and len(keys) < 20:
                keys.update(str(k) for k in list(rec)[:20])
            continue
        good += 1
        if value:
            yield from _cut(value, final=True)[0]
    if bad_field and not good:
        raise IngestError(
            "--text-field",
            f"{name}: no record has a string field {text_field!r} (its records have "
            f"{', '.join(sorted(keys)[:10]) or 'no keys'}); pass --text-field NAME",
        )


def _parquet_docs(path: Path, name: str, text_field: str, stats: ReadStats) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        stats.skipped_unreadable += 1
        stats.notes.append(f"{name}: not a readable Parquet file ({str(e)[:100]}); skipped")
        return
    columns = pf.schema_arrow.names
    if text_field not in columns:
        raise IngestError(
            "--text-field",
            f"{name}: no column {text_field!r} (columns: {', '.join(columns[:10])}); pass --text-field NAME",
        )
    for batch in pf.iter_batches(batch_size=1024, columns=[text_field]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, bytes):
                value = _Decoder(stats)(value, final=True)
            if isinstance(value, str) and value:
                yield from _cut(value, final=True)[0]
            else:
                stats.skipped_records += value is not None and not isinstance(value, str)


def _spooled(f: IO[bytes], spool_dir: Path) -> Path:
    """A gzipped Parquet file, decompressed to a temporary file (Parquet needs to seek)."""
    fd, tmp = tempfile.mkstemp(suffix=".parquet", dir=spool_dir)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(f, out, BLOCK)
    return Path(tmp)


def read_documents(
    files: list[InputFile],
    *,
    text_field: str,
    stats: ReadStats,
    spool_dir: Path,
    on_file: Callable[[InputFile], None] = lambda f: None,
) -> Iterator[str]:
    """Every document of `files`, in order. `on_file` is called after each file (progress)."""
    for item in files:
        stats.files += 1
        kind, gz = _kind(item.name)
        try:
            yield from _file_docs(item, kind, gz, text_field, stats, spool_dir)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            stats.skipped_unreadable += 1
            stats.notes.append(f"{item.name}: corrupt gzip ({str(e)[:100]}); skipped")
        on_file(item)


def _file_docs(
    item: InputFile, kind: str, gz: bool, text_field: str, stats: ReadStats, spool_dir: Path
) -> Iterator[str]:
    fd = os.open(item.path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in cannot hang us
    with os.fdopen(fd, "rb") as raw:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IngestError("PATH", f"{item.path} is no longer a regular file; remove it")
        f: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw  # type: ignore[assignment]
        if kind == "parquet":
            if not gz:
                yield from _parquet_docs(item.path, item.name, text_field, stats)
                return
            tmp = _spooled(f, spool_dir)
            try:
                yield from _parquet_docs(tmp, item.name, text_field, stats)
            finally:
                tmp.unlink()
            return
        if kind == "jsonl":
            yield from _jsonl_docs(f, item.name, text_field, stats)
            return
        first = f.read(BLOCK)
        if b"\0" in first[:SNIFF]:
            stats.skipped_binary += 1
            return
        yield from _text_docs(f, first, stats)
