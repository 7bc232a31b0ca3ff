"""Bring your own corpus: ingest text into a tokenizer and token files (`scalelab data ingest`).

Torch-free and Ray-free data preparation: readers (text, jsonl, parquet, gzip) -> document-level
held-out split -> exact and near (MinHash LSH) deduplication -> byte-level BPE (Hugging Face
`tokenizers`) -> `train.bin` / `val.bin` / `tokenizer.json` / `meta.json` in one folder, which a
study names as `data: {source: corpus, path: DIR}` (trainer/data.py memory-maps it).

    files = list_files(["docs/", "more.jsonl.gz"])
    report = ingest(files, "corpora/mine", IngestSettings(vocab_size=32000))
    report.meta["bytes_per_token"]
"""

from .errors import CorpusError, IngestError
from .pipeline import DEDUP_MODES, DEFAULT_VAL_FRACTION, DEFAULT_VOCAB, IngestReport, IngestSettings, ingest
from .readers import InputFile, list_files, stdlib_root
from .source import bits_per_byte, corpus_spec
from .store import FORMAT, dtype_for, read_meta, verify

__all__ = [
    "DEDUP_MODES",
    "DEFAULT_VAL_FRACTION",
    "DEFAULT_VOCAB",
    "CorpusError",
    "FORMAT",
    "IngestError",
    "IngestReport",
    "IngestSettings",
    "InputFile",
    "bits_per_byte",
    "corpus_spec",
    "dtype_for",
    "ingest",
    "list_files",
    "read_meta",
    "stdlib_root",
    "verify",
]
