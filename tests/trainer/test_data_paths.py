"""Data paths a hostile or careless user can hand the trainer: never a hang, never a flood,
and the tokens source reads only the windows it uses."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from trainer import data as data_mod
from trainer.data import make_source, write_tokens
from trainer.spec import DataSpec, SpecError


def _text_dir(tmp_path, n=30):
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(n):
        (d / f"f{i:02d}.txt").write_bytes(bytes([65 + i % 26]) * 400)
    return d


def _text(d, **kw):
    return DataSpec(source="text", vocab_size=256, paths=(str(d),), seq_len=16, val_tokens=64, **kw)


@pytest.fixture(autouse=True)
def _fresh_corpus_cache():
    data_mod._text_corpus.cache_clear()
    yield
    data_mod._text_corpus.cache_clear()


def _finishes(fn, fifo, timeout=20.0):
    """Run fn in a thread; if it blocks on the FIFO, unblock it by opening the writer end."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", _call(fn)), daemon=True)
    t.start()
    t.join(timeout)
    hung = t.is_alive()
    if hung:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
    return not hung, box.get("out")


def _call(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e


def test_fifo_in_a_text_directory_never_hangs(tmp_path):
    d = _text_dir(tmp_path)
    for name in ("a_pipe.txt", "z_pipe.txt", "f00a.txt", "f09z.txt"):  # both splits, any order
        os.mkfifo(d / name)
    done, out = _finishes(lambda: make_source(_text(d), 0), d / "a_pipe.txt")
    assert done, "reading a text corpus with a FIFO in it hung"
    assert not isinstance(out, Exception), out
    assert out.batch(0, 4).max() < 256


def test_named_fifo_is_an_error_naming_the_path(tmp_path):
    d = _text_dir(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    spec = DataSpec(
        source="text", vocab_size=256, paths=(str(d), str(tmp_path / "pipe")), seq_len=16, val_tokens=64
    )
    done, out = _finishes(lambda: make_source(spec, 0), tmp_path / "pipe")
    assert done and isinstance(out, SpecError)
    assert out.field == "data.paths" and "not a regular file" in str(out) and "pipe" in str(out)


def test_symlink_to_dev_zero_is_refused(tmp_path):
    d = _text_dir(tmp_path)
    os.symlink("/dev/zero", d / "zeros.txt")
    src = make_source(_text(d), 0)
    assert src.unique_train_tokens < 30 * 400  # only the 30 regular files were read
    assert 0 not in np.unique(src.batch(0, 50))  # no NUL byte from /dev/zero


def test_text_bytes_read_are_bounded(tmp_path, monkeypatch):
    d = _text_dir(tmp_path)
    monkeypatch.setattr(data_mod, "USER_CORPUS_MAX_BYTES", 1000)
    src = make_source(_text(d), 0)
    assert src.unique_train_tokens == 1000


def _tokens_dir(tmp_path, train, val):
    write_tokens(tmp_path / "train.bin", train)
    write_tokens(tmp_path / "val.bin", val)
    return DataSpec(source="tokens", vocab_size=100, paths=(str(tmp_path),), seq_len=10, val_tokens=50)


def test_tokens_read_only_the_validation_windows_used(tmp_path):
    rng = np.random.default_rng(0)
    val = rng.integers(0, 100, 5000)
    val[4000] = 60000  # beyond the 5 windows (51 tokens) used: never read
    src = make_source(_tokens_dir(tmp_path, rng.integers(0, 100, 3000), val), 0)
    np.testing.assert_array_equal(src.val[0], val[:11])
    assert isinstance(src.train, np.memmap)
    val[3] = 60000  # inside a used window: refused, naming the key
    with pytest.raises(SpecError) as e:
        make_source(_tokens_dir(tmp_path, rng.integers(0, 100, 3000), val), 0)
    assert e.value.field == "data.vocab_size"


def test_tokens_out_of_vocab_training_token_is_refused_when_read(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 100, 3000)
    train[1500:1520] = 500
    src = make_source(_tokens_dir(tmp_path, train, rng.integers(0, 100, 200)), 0)
    with pytest.raises(SpecError) as e:
        src.batch(0, src.n_windows)
    assert e.value.field == "data.vocab_size" and "500" in str(e.value)


def test_tokens_files_must_be_regular(tmp_path):
    rng = np.random.default_rng(2)
    spec = _tokens_dir(tmp_path, rng.integers(0, 100, 3000), rng.integers(0, 100, 200))
    os.unlink(tmp_path / "val.bin")
    os.mkfifo(tmp_path / "val.bin")
    done, out = _finishes(lambda: make_source(spec, 0), tmp_path / "val.bin")
    assert done and isinstance(out, SpecError) and "val.bin is not a regular file" in str(out)
