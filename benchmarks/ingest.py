"""Ingest throughput: `scalelab data ingest` on 100 MB of text (dedup near, vocab 32k).

The text, made before timing (no download): this Python's standard library (~31 MB of real code
and docstrings) plus generated documents of a Zipf-distributed 20000-word language, written as
.txt files and one .jsonl.gz, with planted exact (re-cased) and near (one word changed) copies,
so both dedup kinds do real work. The ingest runs as the CLI in a child process pinned to 2 CPU
cores (`taskset`-style affinity, where the machine has them), which gives its wall time and its
peak memory (the child's max RSS).

Then, in this process, encoding throughput on the same documents with the trained tokenizer:
the pipeline's encoder (trainer.corpus.bpe.encode_to: parallel batches -> uint16 ids -> file)
against the `tokenizers` library's own batch encoder (`Tokenizer.encode_batch`), both on the
same 2 cores, alternated, best of each. A ratio >= 1 means the pipeline adds no overhead over
the library (it uses the library's offset-free batch call).

    .venv/bin/python benchmarks/ingest.py                 # 100 MB, vocab 32000, target <= 120 s
    .venv/bin/python benchmarks/ingest.py --smoke-test    # 5 MB, vocab 2048 (CI-sized)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from trainer.corpus import list_files, stdlib_root  # noqa: E402
from trainer.corpus.bpe import encode_to  # noqa: E402
from trainer.corpus.readers import ReadStats, read_documents  # noqa: E402

TARGET_S = 120.0
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "do", "fe", "gi", "ho", "an"]


def _lexicon(n: int, rng: np.random.Generator) -> np.ndarray:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES, size=int(rng.integers(1, 5)))))
    return np.array(sorted(words))


def _document(lex: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> str:
    ws = lex[rng.choice(len(lex), size=int(rng.integers(200, 3000)), p=p)]
    lines = [" ".join(ws[i : i + 14]).capitalize() + "." for i in range(0, len(ws), 14)]
    return "\n".join("\n\n".join(lines[i : i + 6]) for i in range(0, len(lines), 6)) + "\n"


def make_text(root: Path, total_bytes: int, seed: int = 0) -> dict:
    """The stdlib (copied by reference: a folder of links) plus generated documents up to
    total_bytes; 2% of generated documents planted again re-cased, 2% with one word changed."""
    rng = np.random.default_rng(seed)
    lex = _lexicon(20000, rng)
    p = 1.0 / np.arange(1, len(lex) + 1) ** 1.1
    p /= p.sum()
    std = list_files([str(stdlib_root())], suffixes=(".py",))
    std_bytes = sum(f.size for f in std) if total_bytes > 40e6 else 0
    for f in std if std_bytes else []:
        dst = root / "stdlib" / f.name.split("/", 1)[1]
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f.path, dst)
    gen, made, planted = root / "gen", std_bytes, {"exact": 0, "near": 0}
    root.mkdir(parents=True, exist_ok=True)
    jsonl = gzip.open(root / "records.jsonl.gz", "wt")
    i = 0
    while made < total_bytes:
        doc = _document(lex, p, rng)
        if i % 10 == 9:
            jsonl.write(json.dumps({"text": doc}) + "\n")
        else:
            (gen / f"d{i // 1000:03d}").mkdir(parents=True, exist_ok=True)
            (gen / f"d{i // 1000:03d}" / f"doc{i:06d}.txt").write_text(doc)
        made += len(doc)
        if i % 50 == 7:  # planted copies
            (gen / f"d{i // 1000:03d}" / f"copy{i:06d}.txt").write_text(doc.upper())
            words = doc.split(" ")
            words[len(words) // 2] = "zzyzx"
            (gen / f"d{i // 1000:03d}" / f"near{i:06d}.txt").write_text(" ".join(words))
            made += 2 * len(doc)
            planted["exact"] += 1
            planted["near"] += 1
        i += 1
    jsonl.close()
    return {"bytes": made, "stdlib_bytes": std_bytes, "documents": i, "planted": planted}


def two_cores() -> list[int] | None:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cores[:2] if len(cores) >= 2 else None


def run_ingest(src: Path, out: Path, vocab: int) -> dict:
    """The CLI in a child pinned to 2 cores: (its --json output, wall s, peak RSS bytes)."""
    cores = two_cores()
    env = {**os.environ, "RAYON_NUM_THREADS": "2"}  # tokenizers' thread pool: the 2 cores
    argv = [sys.executable, "-m", "orchestrator.cli", "data", "ingest", str(src), "--out", str(out)]
    argv += ["--vocab-size", str(vocab), "--dedup", "near", "--force", "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    r = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"ingest failed ({r.returncode}): {r.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = json.loads(r.stdout)
    res["wall_s"], res["peak_rss_bytes"] = wall, max(peak, before) * 1024
    return res


def encode_speed(out: Path, src: Path, max_bytes: int, rounds: int = 3) -> dict:
    """tokens/s: the pipeline's encoder vs tokenizers' encode_batch, same docs, same cores."""
    from tokenizers import Tokenizer

    cores = two_cores()
    if cores:
        os.sched_setaffinity(0, cores)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    docs, size = [], 0
    stats = ReadStats()
    for d in read_documents(list_files([str(src)]), text_field="text", stats=stats, spool_dir=out.parent):
        docs.append(d)
        size += len(d)
        if size >= max_bytes:
            break
    best = {"library": 0.0, "pipeline": 0.0}
    tokens = 0
    for _ in range(rounds):
        t = time.perf_counter()
        tokens = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
        best["library"] = max(best["library"], tokens / (time.perf_counter() - t))
        with open(os.devnull, "wb") as sink:
            t = time.perf_counter()
            n, _ = encode_to(tok, iter(docs), sink, np.dtype(np.uint16))
            best["pipeline"] = max(best["pipeline"], (n - len(docs)) / (time.perf_counter() - t))
    return {"mb": size / 1e6, "tokens": tokens, **best, "ratio": best["pipeline"] / best["library"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="megabytes of text (default 100)")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--smoke-test", action="store_true", help="5 MB, vocab 2048")
    a = ap.parse_args()
    mb, vocab = (5.0, 2048) if a.smoke_test else (a.mb, a.vocab_size)
    with tempfile.TemporaryDirectory(prefix="scalelab-ingest-bench-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "corpus"
        t = time.perf_counter()
        text = make_text(src, int(mb * 1e6))
        print(
            f"text: {text['bytes'] / 1e6:.1f} MB ({text['stdlib_bytes'] / 1e6:.1f} MB stdlib + generated "
            f"documents; planted {text['planted']['exact']} exact and {text['planted']['near']} near "
            f"copies), made in {time.perf_counter() - t:.1f} s (not timed)"
        )
        cores = two_cores()
        print(
            f"ingest on {'cores ' + str(cores) if cores else 'all (fewer than 2) cores'}, vocab {vocab}, dedup near"
        )
        res = run_ingest(src, out, vocab)
        s = res["seconds"]
        tokens = res["train_tokens"] + res["val_tokens"]
        verdict = "PASS" if res["wall_s"] <= TARGET_S or a.smoke_test else "FAIL"
        print(
            f"ingest: {res['wall_s']:.1f} s wall (target <= {TARGET_S:.0f} s at 100 MB: {verdict}); "
            f"{text['bytes'] / 1e6 / res['wall_s']:.2f} MB/s; phases: read+dedup {s['read_dedup_s']:.1f} s, "
            f"tokenizer {s['tokenizer_s']:.1f} s (on {res['tokenizer_sample_bytes'] / 1e6:.1f} MB), "
            f"encode {s['encode_s']:.1f} s ({tokens / s['encode_s']:.3g} tokens/s incl. writing)"
        )
        print(
            f"peak memory: {res['peak_rss_bytes'] / 2**20:.0f} MiB (max RSS of the ingest process) for "
            f"{text['bytes'] / 1e6:.0f} MB of text, {res['docs_read']} documents"
        )
        print(
            f"result: {res['n_docs']} + {res['n_docs_val']} documents (train + val), {tokens} tokens, "
            f"{res['bytes_per_token']:.3f} bytes/token; duplicates: {res['duplicates_exact']} exact, "
            f"{res['duplicates_near']} near; xz -9e {res['compressor_bpb']:.3f} bits/byte"
        )
        enc = encode_speed(out, src, max_bytes=int(min(20e6, mb * 0.2e6)))
        print(
            f"encoding ({enc['mb']:.1f} MB, {enc['tokens']} tokens, 2 cores): pipeline "
            f"{enc['pipeline']:.3g} tokens/s vs tokenizers' encode_batch {enc['library']:.3g} tokens/s "
            f"= {enc['ratio']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
