"""Training on an ingested corpus: the `corpus` source, bits per byte, epochs, hashes in the run
key, and the checks that refuse a changed, half-written or too small corpus."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from tests.corpus_data import documents, write_tree
from trainer import InMemorySink, train
from trainer.corpus import IngestSettings, corpus_spec, ingest, list_files, read_meta
from trainer.corpus.source import bits_per_byte
from trainer.data import make_source
from trainer.spec import DataSpec, ModelSpec, RecipeSpec, RunSpec, SpecError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    write_tree(tmp / "src", documents(80, seed=5))
    ingest(
        list_files([str(tmp / "src")]),
        tmp / "c",
        IngestSettings(vocab_size=300, val_fraction=0.25),
        progress=False,
    )
    return tmp / "c"


def _spec(path, tokens=4096, val_tokens=512, **data) -> RunSpec:
    d = corpus_spec(path, seq_len=16, val_tokens=val_tokens, **data)
    m = ModelSpec(n_layer=1, d_model=16, n_head=2, vocab_size=d.vocab_size, seq_len=16)
    return RunSpec(model=m, data=d, recipe=RecipeSpec(batch_size=8, lr=1e-2), tokens=tokens)


def test_bits_per_byte_by_hand():
    # 2.0 nats/token at 4 bytes/token: 0.5 nats/byte = 0.5 / ln 2 = 0.7213475 bits/byte
    assert bits_per_byte(2.0, 4.0) == pytest.approx(0.7213475204444817, rel=1e-12)
    assert bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)  # one bit per byte-token


def test_source_reads_the_corpus_and_converts_with_its_validation_split(corpus):
    m = read_meta(corpus)
    spec = _spec(corpus)
    assert spec.data.vocab_size == 300 and spec.data.corpus_hash == m["corpus_hash"]
    src = make_source(spec.data, 0)
    val = np.fromfile(corpus / "val.bin", dtype=np.uint16)
    np.testing.assert_array_equal(src.val[0], val[:17])  # first window: tokens 0..16
    # hand computation from meta.json: nats/token x tokens/byte / ln 2
    expected = 3.0 * m["val_tokens"] / m["bytes_val"] / math.log(2)
    assert src.eval_metrics(3.0)["val_bpb"] == pytest.approx(expected, rel=1e-12)
    # epochs = training tokens seen / training tokens available (position counts windows of T)
    assert src.epochs(100) == pytest.approx(100 * 16 / m["train_tokens"])
    assert src.params()["unique_tokens"] == m["train_tokens"]


def test_training_logs_val_bpb_beside_val_loss_and_epochs(corpus, tmp_path):
    m = read_meta(corpus)
    tokens = (int(1.5 * m["train_tokens"]) // 128 + 1) * 128  # repeats the data: 1.5+ epochs
    sink = InMemorySink()
    r = train(_spec(corpus, tokens), sink, checkpoint_dir=tmp_path / "ck")
    assert r.status == "finished", r.message
    series = {}
    for k, v, step in sink.metrics:
        series.setdefault(k, {})[step] = v
    assert set(series["val_bpb"]) == set(series["val_loss"])  # at every evaluation
    ratio = m["val_tokens"] / m["bytes_val"] / math.log(2)
    for step, loss in series["val_loss"].items():
        assert series["val_bpb"][step] == pytest.approx(loss * ratio, rel=1e-9)
    assert series["epochs"][tokens] == pytest.approx(tokens / m["train_tokens"], rel=1e-9) and r.epochs > 1.5
    assert r.val_loss < math.log(300)  # it learned something
    assert sink.params["corpus_hash"] == m["corpus_hash"][:16] and sink.params["compressor_bpb"] > 0


def test_run_key_follows_content_not_folder(corpus, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(corpus, moved)
    a, b = _spec(corpus), _spec(moved)
    assert a.key() == b.key() and a.to_dict()["data"]["path"] != b.to_dict()["data"]["path"]
    assert "path" not in a.identity()["data"] and "corpus_hash" in a.identity()["data"]
    assert RunSpec.from_dict(a.to_dict()) == a  # travels to workers unchanged
    other = tmp_path / "other"
    write_tree(tmp_path / "src2", documents(80, seed=6))
    ingest(
        list_files([str(tmp_path / "src2")]),
        other,
        IngestSettings(vocab_size=300, val_fraction=0.25),
        progress=False,
    )
    assert _spec(other).key() != a.key()


def test_a_changed_or_broken_corpus_is_refused(corpus, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    spec = _spec(copy)
    meta = read_meta(copy)
    write_tree(tmp_path / "src", documents(80, seed=8))
    ingest(
        list_files([str(tmp_path / "src")]),
        copy,
        IngestSettings(vocab_size=300, val_fraction=0.25),
        progress=False,
    )
    with pytest.raises(SpecError, match="data.path.*changed since this study was planned"):
        make_source(spec.data, 0)
    with pytest.raises(SpecError, match="data.val_tokens.*lower data.val_tokens to at most.*--val-fraction"):
        _spec(corpus, val_tokens=meta["val_tokens"] + 64)
    with pytest.raises(SpecError, match="data.path: missing"):
        DataSpec(source="corpus")
    with pytest.raises(SpecError, match="data.corpus_hash: missing.*corpus_spec"):
        DataSpec(source="corpus", path=str(corpus))
    with pytest.raises(SpecError, match="data.vocab_size: the corpus .* has vocab_size 300"):
        corpus_spec(corpus, vocab_size=512)
    with pytest.raises(SpecError, match="data.max_epochs: applies to the corpus source only"):
        DataSpec(source="markov", max_epochs=2.0)


def test_other_sources_keep_their_keys():
    d = DataSpec(source="markov", vocab_size=16, order=1, seq_len=16, val_tokens=1024)
    m = ModelSpec(n_layer=1, d_model=16, n_head=2, vocab_size=16, seq_len=16)
    spec = RunSpec(model=m, data=d, recipe=RecipeSpec(batch_size=8), tokens=4096)
    assert not {"path", "max_epochs", "corpus_hash", "tokenizer_hash"} & set(spec.to_dict()["data"])
