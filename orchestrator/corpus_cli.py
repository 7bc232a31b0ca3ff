"""`scalelab data ingest`: the command-line face of trainer.corpus (bring your own corpus).

Exit 0 on success (also when DIR is already up to date), 2 on bad input naming the flag and the
fix, with nothing written to DIR.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from .study.values import StudyError


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    """`scalelab data ingest PATH... --out DIR --vocab-size V [...]`."""
    p = sub.add_parser("data", help="prepare data for studies (data ingest: your own corpus)")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser(
        "ingest",
        help="text files/folders, .jsonl, .parquet (and .gz of those) -> tokenizer + token files in DIR",
        description="Split documents into validation and training by a hash of their text, "
        "deduplicate (exact, near: MinHash LSH), train a byte-level BPE tokenizer on the "
        "training split and write DIR/train.bin, val.bin, tokenizer.json, meta.json. A study "
        "trains on it with data: {source: corpus, path: DIR}.",
    )
    q.add_argument("paths", nargs="*", metavar="PATH", help="files and folders (recursively)")
    q.add_argument("--out", required=True, metavar="DIR", help="the corpus folder to write")
    q.add_argument(
        "--python-stdlib", action="store_true", help="ingest this Python's standard-library .py files"
    )
    q.add_argument(
        "--vocab-size",
        type=int,
        metavar="V",
        help="BPE vocabulary incl. the end-of-document token (default 1024, sized for CPU studies; real corpora: 32000-65535)",
    )
    q.add_argument(
        "--val-fraction", type=float, metavar="F", help="share of documents held out (default 0.02)"
    )
    q.add_argument(
        "--dedup", choices=("near", "exact", "none"), default="near", help="default: near (also exact)"
    )
    q.add_argument(
        "--text-field", default="text", metavar="NAME", help="jsonl field / parquet column (default: text)"
    )
    q.add_argument(
        "--dtype", choices=("auto", "uint16", "uint32"), default="auto", help="token file ids (auto: uint16 when V <= 65535)"
    )  # fmt: skip
    q.add_argument("--force", action="store_true", help="write DIR again even when it is up to date")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument("--json", action="store_true", help="print meta.json (and what was done) as JSON")
    q.set_defaults(func=cmd_data_ingest)


def cmd_data_ingest(a: argparse.Namespace) -> int:
    from trainer.corpus import IngestError, IngestSettings, ingest, list_files, stdlib_root
    from trainer.corpus.pipeline import DEFAULT_VAL_FRACTION, DEFAULT_VOCAB

    try:
        if a.paths and a.python_stdlib:
            raise IngestError("PATH", "give files/folders or --python-stdlib, not both")
        if not a.paths and not a.python_stdlib:
            raise IngestError("PATH", "name files or folders to ingest (or pass --python-stdlib)")
        if a.python_stdlib:
            files = list_files([str(stdlib_root())], suffixes=(".py",))
            source = f"python-stdlib {platform.python_version()}"
        else:
            files = list_files(a.paths)
            source = "files"
        settings = IngestSettings(
            vocab_size=DEFAULT_VOCAB if a.vocab_size is None else a.vocab_size,
            val_fraction=DEFAULT_VAL_FRACTION if a.val_fraction is None else a.val_fraction,
            dedup=a.dedup,
            text_field=a.text_field,
            dtype=a.dtype,
        )
        report = ingest(
            files, a.out, settings, progress=not a.no_progress and not a.json, force=a.force, source=source
        )
    except IngestError as e:
        raise StudyError(e.flag, e.message) from None
    for note in report.notes:
        print(note, file=sys.stderr)
    if a.json:
        print(
            json.dumps({**report.meta, "up_to_date": report.up_to_date, "seconds": report.seconds}, indent=1)
        )
        return 0
    print(summary(a.out, report.meta, report.seconds))
    return 0


def summary(out: str, m: dict, seconds: dict) -> str:
    took = f" in {seconds['total_s']:.1f} s" if "total_s" in seconds else " (up to date)"
    return (
        f"{out}{took}: {m['files']} files -> {m['n_docs']} training documents ({m['bytes'] / 1e6:.2f} MB, "
        f"{m['train_tokens']} tokens) + {m['n_docs_val']} validation ({m['bytes_val'] / 1e6:.2f} MB, "
        f"{m['val_tokens']} tokens); {m['bytes_per_token']:.3f} bytes/token (validation); "
        f"dropped {m['duplicates_exact']} exact and {m['duplicates_near']} near duplicates "
        f"({m['duplicates_near_of_val']} of validation documents); skipped {m['skipped_binary']} binary "
        f"files; vocab {m['vocab_size']} ({m['dtype']}); xz -9e on the validation text: "
        f"{m['compressor_bpb']:.3f} bits/byte\n"
        f"train on it with  data: {{source: corpus, path: {out}}}"
    )
