"""`scalelab data ingest` (trainer/corpus): readers, the held-out split, dedup, outputs,
byte-identical reruns, changed inputs and bad input. Small synthetic corpora only."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.corpus_data import documents, near_copy, write_tree
from trainer.corpus import CorpusError, IngestError, IngestSettings, ingest, list_files, read_meta
from trainer.corpus import readers as readers_mod
from trainer.corpus.dedup import doc_key, is_validation
from trainer.corpus.readers import ReadStats, read_documents

FILES = ("train.bin", "val.bin", "tokenizer.json", "meta.json")


def _docs(paths, tmp_path, text_field="text"):
    stats = ReadStats()
    docs = list(
        read_documents(
            list_files([str(p) for p in paths]), text_field=text_field, stats=stats, spool_dir=tmp_path
        )
    )
    return docs, stats


def _ingest(files_root, out, force=False, **kw):
    settings = IngestSettings(**{"vocab_size": 400, "val_fraction": 0.2, **kw})
    return ingest(list_files([str(files_root)]), out, settings, progress=False, force=force)


# --------------------------------------------------------------------------- readers


def test_readers_text_jsonl_parquet_and_gzip(tmp_path):
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "a.txt").write_text("plain text\n")
    (src / "nested" / "b.md").write_text("# markdown\n")
    (src / "c.py").write_text("def f():\n    return 1\n")
    rows = [{"body": "from jsonl one"}, {"body": "from jsonl two"}, {"other": 1}, "not an object"]
    (src / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    with gzip.open(src / "e.jsonl.gz", "wt") as f:
        f.write(json.dumps({"body": "gzipped jsonl"}) + "\n")
    pd.DataFrame({"body": ["parquet row", None, "parquet row 2"]}).to_parquet(src / "f.parquet")
    with open(src / "f.parquet", "rb") as f, gzip.open(src / "g.parquet.gz", "wb") as g:
        g.write(f.read())
    with gzip.open(src / "h.txt.gz", "wt") as f:
        f.write("gzipped text\n")
    (src / "i.bin").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0binary")
    (src / "j.txt").write_bytes(b"caf\xe9 \xff latin-1 bytes\n")
    (src / ".hidden").write_text("never read\n")
    os.mkfifo(src / "k.fifo")  # not a regular file: never opened
    docs, stats = _docs([src], tmp_path, text_field="body")
    assert sorted(docs) == sorted(
        [
            "plain text\n",
            "def f():\n    return 1\n",
            "from jsonl one",
            "from jsonl two",
            "gzipped jsonl",
            "parquet row",
            "parquet row 2",
            "parquet row",
            "parquet row 2",
            "gzipped text\n",
            "caf\ufffd \ufffd latin-1 bytes\n",
            "# markdown\n",
        ]
    )
    assert stats.skipped_binary == 1 and stats.replaced_bytes == 2
    assert stats.skipped_records == 3  # no field, not an object, broken JSON
    assert stats.files == 10


def test_long_text_is_cut_into_documents_at_blank_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(readers_mod, "DOC_MAX_CHARS", 100)
    monkeypatch.setattr(readers_mod, "BLOCK", 64)
    paragraphs = [f"paragraph {i} " + "word " * 8 for i in range(30)]
    (tmp_path / "long.txt").write_text("\n\n".join(paragraphs))
    docs, _ = _docs([tmp_path / "long.txt"], tmp_path)
    assert len(docs) > 5 and all(len(d) <= 100 for d in docs)
    assert "".join(docs) == "\n\n".join(paragraphs)  # nothing lost or repeated
    assert all(d.endswith("\n\n") for d in docs[:-1])


def test_field_and_column_errors_name_text_field(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(IngestError, match="--text-field.*content"):
        _docs([tmp_path / "a.jsonl"], tmp_path)
    pd.DataFrame({"content": ["x"]}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(IngestError, match="--text-field.*columns: content"):
        _docs([tmp_path / "b.parquet"], tmp_path)


# --------------------------------------------------------------------------- split and dedup


def test_split_is_a_stable_function_of_the_text():
    docs = documents(400, seed=3, words=(20, 40))
    val = {d for d in docs if is_validation(doc_key(d), 0.1)}
    assert 20 <= len(val) <= 60  # ~10%
    again = {d for d in reversed(docs) if is_validation(doc_key(d), 0.1)}
    assert again == val  # order (and file names) do not matter
    # exact duplicates up to case and whitespace share the key, so the side of the split
    assert doc_key("Hello   World\n") == doc_key("hello world")
    assert doc_key("hello world") != doc_key("hello worlds")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """60 documents + 3 exact copies (case/whitespace changed) + 3 near copies, one of them of a
    validation document placed where training documents are."""
    tmp = tmp_path_factory.mktemp("planted")
    docs = documents(60, seed=1)
    val = [d for d in docs if is_validation(doc_key(d), 0.2)]
    train = [d for d in docs if not is_validation(doc_key(d), 0.2)]
    assert val and train
    extra = [docs[0].upper(), docs[1].replace(" ", "  "), docs[2] + "\n\n"]
    near = [near_copy(train[3], 1), near_copy(train[4], 2)]
    # a near copy of a validation document that falls into the training split
    leak = next(
        n for n in (near_copy(v, s) for s in range(50) for v in val) if not is_validation(doc_key(n), 0.2)
    )
    write_tree(tmp / "src", docs + extra + near + [leak])
    out = tmp / "corpus"
    report = _ingest(tmp / "src", out)
    return {"docs": docs, "val": val, "report": report, "out": out, "src": tmp / "src", "tmp": tmp}


def test_planted_duplicates_are_found_and_leaks_dropped(planted):
    m = planted["report"].meta
    assert m["duplicates_exact"] == 3
    assert m["duplicates_near"] == 3 and m["duplicates_near_of_val"] == 1
    assert m["n_docs"] + m["n_docs_val"] == 60
    assert m["n_docs_val"] == len(planted["val"])
    assert m["files"] == 66 and m["docs_read"] == 66


def test_outputs_decode_to_the_split_exactly(planted):
    from tokenizers import Tokenizer

    out, m = planted["out"], planted["report"].meta
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert set(read_meta(out)) >= {
        "n_docs", "n_docs_val", "bytes", "bytes_val", "train_tokens", "val_tokens", "bytes_per_token",
        "duplicates_exact", "duplicates_near", "skipped_binary", "vocab_size", "dtype", "inputs_hash",
        "tokenizer_hash", "corpus_hash",
    }  # fmt: skip
    assert m["dtype"] == "uint16" and m["vocab_size"] == 400
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    assert len(val) == m["val_tokens"] and (val == 0).sum() == m["n_docs_val"]  # one EOS per document
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() <= 400 and tok.token_to_id("<|endoftext|>") == 0
    texts = [tok.decode(list(seg)) for seg in np.split(val, np.flatnonzero(val == 0) + 1)[:-1]]
    assert sorted(texts) == sorted(planted["val"])  # byte-level BPE round-trips exactly
    assert m["bytes_val"] == sum(len(t.encode()) for t in texts)
    assert m["bytes_per_token"] == pytest.approx(m["bytes_val"] / m["val_tokens"], rel=1e-12)
    assert 0.5 < m["compressor_bpb"] < 8 and m["compressor"]["name"] == "xz"


def test_reruns_are_byte_identical_and_changes_are_detected(planted):
    tmp, first = planted["tmp"], planted["out"]
    settings = IngestSettings(vocab_size=400, val_fraction=0.2)
    files = list_files([str(planted["src"])])
    src = tmp / "src2"
    shutil.copytree(planted["src"], src)
    again = ingest(files, first, settings, progress=False)
    assert again.up_to_date  # same inputs and settings: nothing to do
    copy = ingest(files, tmp / "copy", settings, progress=False, force=True)
    assert not copy.up_to_date
    for f in FILES:
        assert (first / f).read_bytes() == (tmp / "copy" / f).read_bytes(), f
    (src / "part0" / "new.txt").write_text(documents(1, seed=9)[0])
    changed = ingest(list_files([str(src)]), tmp / "copy", settings, progress=False)
    assert any("inputs changed" in n for n in changed.notes)
    assert changed.meta["inputs_hash"] != copy.meta["inputs_hash"]
    assert changed.meta["corpus_hash"] != copy.meta["corpus_hash"]


def test_dedup_none_keeps_copies_and_uint32_above_65535(tmp_path):
    docs = documents(20, seed=2, words=(30, 60))
    write_tree(tmp_path / "src", docs + docs[:2])
    out = tmp_path / "src" / "c"  # inside the inputs: its own files are never read back
    r = _ingest(tmp_path / "src", out, dedup="none", vocab_size=70000, val_fraction=0.3)
    m = r.meta
    assert m["duplicates_exact"] == 0 and m["n_docs"] + m["n_docs_val"] == 22
    assert m["dtype"] == "uint32" and m["vocab_size"] == 70000
    assert os.path.getsize(out / "train.bin") == 4 * m["train_tokens"]
    again = _ingest(tmp_path / "src", out, force=True, dedup="none", vocab_size=70000, val_fraction=0.3)
    assert again.meta == m


# --------------------------------------------------------------------------- bad input, atomicity


def test_bad_input_names_the_flag(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.dat").write_bytes(b"\0\1\2" * 10)
    with pytest.raises(IngestError, match="^PATH: the corpus is empty.*1 binary"):
        _ingest(tmp_path / "bin", tmp_path / "out")
    write_tree(tmp_path / "few", documents(3, seed=4))
    with pytest.raises(IngestError, match="^--val-fraction: the validation split is empty"):
        _ingest(tmp_path / "few", tmp_path / "out", val_fraction=1e-9)
    with pytest.raises(IngestError, match="^--vocab-size: 70000 token ids do not fit uint16"):
        _ingest(tmp_path / "few", tmp_path / "out", vocab_size=70000, dtype="uint16")
    with pytest.raises(IngestError, match="^--vocab-size: .* do not fit uint32"):
        _ingest(tmp_path / "few", tmp_path / "out", vocab_size=2**32)
    with pytest.raises(IngestError, match="^--vocab-size: 100 is too small"):
        _ingest(tmp_path / "few", tmp_path / "out", vocab_size=100)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(IngestError, match="^--out: .* is not a scalelab corpus"):
        _ingest(tmp_path / "few", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_failed_ingest_keeps_the_old_corpus_and_half_written_is_refused(planted, tmp_path, monkeypatch):
    from trainer.corpus import bpe

    out = tmp_path / "c"
    _ingest(planted["src"], out)
    before = {f: (out / f).read_bytes() for f in FILES}

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bpe, "encode_to", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _ingest(planted["src"], out, force=True)
    assert {f: (out / f).read_bytes() for f in FILES} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with open(out / "train.bin", "r+b") as f:  # truncated
        f.truncate(10)
    with pytest.raises(CorpusError, match="data.path.*half-written"):
        read_meta(out)
    (out / "meta.json").unlink()
    with pytest.raises(CorpusError, match="data.path.*no meta.json"):
        read_meta(out)
    with pytest.raises(CorpusError, match="data.path.*does not exist.*scalelab data ingest"):
        read_meta(tmp_path / "nowhere")
