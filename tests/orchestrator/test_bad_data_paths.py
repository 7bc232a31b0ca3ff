"""Bad `data.paths` fail at load (`plan`, `run`): exit 2 naming the key, before the experiment
is created. Each case is one `make_source` rejects at run time (checked here too), so the two
never disagree."""

from __future__ import annotations

import os

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.study.config import StudyError, load_study
from trainer.data import _text_corpus, make_source, write_tokens

STUDY = """\
study: bad-data
data: {data}
model: {{d_head: 8, aspect_ratio: 8}}
grid: {{sizes: [{{n_layer: 1, d_model: 16}}], tokens: [4096]}}
train: {{batch_size: 8, lr: 1.0e-2}}
"""


def _text_dir(root, n, size=400):
    d = root / "corpus"
    d.mkdir()
    for i in range(n):
        (d / f"f{i:02d}.txt").write_bytes(bytes([65 + i % 26]) * size)
    return d


def _tokens_dir(root, train, val):
    d = root / "tok"
    d.mkdir()
    write_tokens(d / "train.bin", train)
    write_tokens(d / "val.bin", val)
    return d


def _text(paths, **kw):
    extra = "".join(f", {k}: {v}" for k, v in kw.items())
    return "{source: text, seq_len: 16, val_tokens: 64, paths: [%s]%s}" % (", ".join(map(str, paths)), extra)


def _tokens(d, val_tokens=64):
    return "{source: tokens, vocab_size: 16, seq_len: 16, val_tokens: %d, paths: [%s]}" % (val_tokens, d)


def _device(root):
    return _text(["/dev/zero"])


def _symlink_to_device(root):
    os.symlink("/dev/zero", root / "zeros.txt")
    return _text([root / "zeros.txt"])


def _fifo(root):
    os.mkfifo(root / "pipe")
    return _text([_text_dir(root, 30), root / "pipe"])


def _one_file_folder(root):
    return _text([_text_dir(root, 1)])


def _folder_of_nothing_readable(root):
    d = _text_dir(root, 0)
    (d / ".hidden.txt").write_text("x" * 1000)
    os.symlink("/dev/urandom", d / "random.txt")
    return _text([d])


def _text_too_small_for_a_window(root):
    return _text([_text_dir(root, 2, size=5)])


def _text_val_too_small(root):
    return _text([_text_dir(root, 30)], val_tokens=100000)


def _tokens_val_too_small(root):
    return _tokens(_tokens_dir(root, np.arange(4096) % 16, np.arange(50) % 16))


def _tokens_train_empty(root):
    return _tokens(_tokens_dir(root, [3], np.arange(4096) % 16))


def _tokens_beyond_vocab(root):
    return _tokens(_tokens_dir(root, np.arange(4096) % 16, np.arange(4096) % 40))


CASES = [
    (_device, "data.paths[0]", "a character device"),
    (_symlink_to_device, "data.paths[0]", "a symlink to a character device (/dev/zero)"),
    (_fifo, "data.paths[1]", "a FIFO"),
    (_one_file_folder, "data.paths[0]", "needs at least two files"),
    (_folder_of_nothing_readable, "data.paths[0]", "holds no regular file"),
    (_text_too_small_for_a_window, "data.paths[0]", "less than one window"),
    (_text_val_too_small, "data.val_tokens", "fewer than the 100001"),
    (_tokens_val_too_small, "data.val_tokens", "fewer than the 65"),
    (_tokens_train_empty, "data.paths[0]", "less than one window"),
    (_tokens_beyond_vocab, "data.vocab_size", "holds token 39 >= vocab_size 16"),
]


@pytest.mark.parametrize("make, key, says", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_data_paths_exit_2_at_plan_and_run_naming_the_key(make, key, says, tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(data=make(tmp_path)))
    home = tmp_path / "store"
    for argv in (["plan", str(path)], ["run", str(path), "--no-progress"]):
        assert main([*argv, "--home", str(home)]) == 2
        err = capsys.readouterr().err
        assert f"error: {key}: " in err and says in err, err
    assert not home.exists()  # no experiment, no ledger
    with pytest.raises(StudyError):
        load_study(path)


@pytest.mark.parametrize("make", [c[0] for c in CASES if c[0] is not _fifo])
def test_the_trainer_rejects_the_same_paths(make, tmp_path, monkeypatch):
    """Without the load-time check, each case would fail only at run time."""
    import orchestrator.study.config as config

    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(data=make(tmp_path)))
    monkeypatch.setattr(config, "check_paths", lambda data: None)
    data = load_study(path).data
    _text_corpus.cache_clear()
    with pytest.raises(Exception) as e:
        make_source(data, 0).batch(0, 1)
    assert "data." in str(getattr(e.value, "field", "")) + str(e.value)


def test_a_good_text_corpus_still_loads(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(data=_text([_text_dir(tmp_path, 30)])))
    assert load_study(path).data.paths
