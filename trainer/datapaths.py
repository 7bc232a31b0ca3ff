"""`data.paths` checked when a study is loaded, from file-system metadata only: what
`make_source` would reject at run time (a device or FIFO, a symlink to one, a folder with too
few files, a split too small for one window or for val_tokens) is a SpecError naming the key
before anything is scheduled. Nothing is read except the validation windows of a tokens
directory (checked against vocab_size); training tokens are still checked batch by batch."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np

from . import data as data_mod
from .spec import DataSpec, SpecError

_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def describe(path: Path) -> str:
    """What a path that is neither a regular file nor a directory is, in words."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        target = f"a symlink to {os.readlink(path)!r}" if path.is_symlink() else "unreadable"
        return f"{target} ({e.strerror})"
    what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"a symlink to {what} ({os.readlink(path)})" if path.is_symlink() else what


def check_paths(data: DataSpec) -> None:
    """Raise SpecError (field `data.paths[i]`, `data.paths`, `data.val_tokens` or
    `data.vocab_size`) where `make_source(data)` would fail on the paths."""
    if data.source == "text" and data.paths:
        _check_text(data)
    elif data.source == "tokens":
        _check_tokens(data)


def _named_files(data: DataSpec) -> list[tuple[str, Path]]:
    """(split name, file) as `data._user_files` lists them, each error naming its path's index."""
    named: list[tuple[str, Path]] = []
    for i, p in enumerate(data.paths):
        path = Path(p).expanduser()
        if not path.is_dir() and not data_mod._regular(path):
            raise SpecError(
                f"data.paths[{i}]",
                f"{p!r} is {describe(path)}; name regular files or directories of text files",
            )
        files = data_mod._user_files((p,))
        if not files:
            raise SpecError(
                f"data.paths[{i}]",
                f"{p!r} holds no regular file (dotfiles, FIFOs, devices and sockets are skipped); "
                "add text files to it or remove it",
            )
        named += [(f"{i}/{name.split('/', 1)[1]}", f) for name, f in files]
    return sorted(named)


def _check_text(data: DataSpec) -> None:
    named = _named_files(data)
    key = "data.paths" if len(data.paths) > 1 else "data.paths[0]"
    if len(named) < 2:
        raise SpecError(
            key,
            f"found {len(named)} file; the text source splits train/validation by file and "
            "needs at least two files (one in ten goes to validation): add files or split this one",
        )
    train_i, val_i = data_mod.split_files([n for n, _ in named])
    if not train_i:
        raise SpecError(key, "every file went to validation; add more files")
    train_bytes = min(sum(os.path.getsize(named[i][1]) for i in train_i), data_mod.USER_CORPUS_MAX_BYTES)
    val_bytes = min(sum(os.path.getsize(named[i][1]) for i in val_i), data_mod.USER_VAL_MAX_BYTES)
    _check_sizes(data, train_bytes, val_bytes, key, f"{len(val_i)} validation file(s)")


def _check_tokens(data: DataSpec) -> None:
    d = Path(data.paths[0]).expanduser()
    sizes = {}
    for name in ("train.bin", "val.bin"):
        if not data_mod._regular(d / name):
            raise SpecError("data.paths[0]", f"{d / name} is {describe(d / name)}; write uint16 tokens to it")
        sizes[name] = os.path.getsize(d / name) // 2
        if sizes[name] < 1:
            raise SpecError("data.paths[0]", f"{d / name} holds no tokens; write uint16 tokens to it")
    _check_sizes(data, sizes["train.bin"], sizes["val.bin"], "data.paths[0]", "val.bin")
    n_val = math.ceil(data.val_tokens / data.seq_len) * data.seq_len + 1
    top = int(np.memmap(d / "val.bin", dtype=np.uint16, mode="r")[:n_val].max())
    if top >= data.vocab_size:
        raise SpecError(
            "data.vocab_size",
            f"{d / 'val.bin'} holds token {top} >= vocab_size {data.vocab_size}; raise vocab_size",
        )


def _check_sizes(data: DataSpec, train: int, val: int, key: str, val_what: str) -> None:
    """Tokens in each split against one training window and the validation windows."""
    T = data.seq_len
    if train < T + 1:
        raise SpecError(
            key,
            f"the training split holds {train} tokens, less than one window of seq_len+1 = {T + 1}; add data",
        )
    need = math.ceil(data.val_tokens / T) * T + 1
    if val < need:
        raise SpecError(
            "data.val_tokens",
            f"the validation split ({val_what}) holds {val} tokens, fewer than the {need} that "
            f"val_tokens={data.val_tokens} needs; lower val_tokens or add validation data",
        )
