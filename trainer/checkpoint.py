"""Atomic checkpoints loadable with `torch.load(weights_only=True)`.

A checkpoint holds the model and optimizer state, the torch/numpy/python RNG states, the data
position (windows consumed), step, tokens, and an `extra` dict of plain values the caller passes
(e.g. the MLflow run id, the metric accumulators). Written to a temporary file in the same
directory and moved into place with os.replace, so a kill never leaves a torn checkpoint.
A file damaged afterwards (disk, copy, hand edit) loads as `CorruptCheckpoint`; the trainer
sets it aside with `set_aside` and resumes from the previous one (`keep_previous`) or restarts.
`torch.load` checks no CRC, so flipped bits in a tensor would load as wrong weights: `load` first
checks the CRC-32 of every member of the checkpoint's zip archive (torch writes them at save).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors/lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_ENVIRONMENT_ERRNOS = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.ENOMEM,
    errno.EMFILE,
    errno.ENFILE,
    errno.EISDIR,
    errno.ENOTDIR,
}
REQUIRED_KEYS = ("model", "optimizer", "rng", "step", "tokens", "position", "extra")


class CorruptCheckpoint(Exception):
    """A checkpoint file exists but cannot be loaded (truncated, garbled, not a checkpoint)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"checkpoint {path} is corrupt: {reason}")
        self.path = Path(path)
        self.reason = reason


def previous_path(path: str | os.PathLike) -> Path:
    """Where `save(..., keep_previous=True)` keeps the checkpoint it replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a corrupt checkpoint to `<name>.corrupt` (numbered if taken); returns the new path."""
    path = Path(path)
    target, n = path.with_name(path.name + ".corrupt"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt.{n}"), n + 1
    os.replace(path, target)
    return target


def save(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    tokens: int,
    position: int,
    extra: dict[str, Any] | None = None,
    keep_previous: bool = False,
) -> None:
    """keep_previous: the replaced checkpoint moves to `previous_path(path)` (a fallback)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "step": int(step),
        "tokens": int(tokens),
        "position": int(position),
        "extra": dict(extra or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                torch.save(payload, f)
            except RuntimeError as e:
                # torch's zip writer reports a full disk as a RuntimeError: say what it is
                if shutil.disk_usage(path.parent).free < (1 << 20):
                    raise OSError(errno.ENOSPC, f"no space left on device writing {path} ({e})") from e
                raise
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def verify(path: str | os.PathLike) -> None:
    """Raise CorruptCheckpoint unless every member of the checkpoint's zip archive matches its
    stored CRC-32 (bit rot, a damaged copy); reads the whole file once. Errors of the machine
    (missing file, permissions, I/O) propagate as in `load`."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member, comparing its CRC-32
    except OSError as e:
        if e.errno in _ENVIRONMENT_ERRNOS or not os.path.isfile(path):
            raise
        raise CorruptCheckpoint(path, f"{type(e).__name__}: {str(e)[:200]}") from e
    except Exception as e:  # noqa: BLE001 - zipfile reports damage as BadZipFile, EOFError, ...
        raise CorruptCheckpoint(path, f"not a readable archive ({type(e).__name__}: {str(e)[:200]})") from e
    if bad is not None:
        raise CorruptCheckpoint(path, f"CRC-32 check failed for {bad} (bit rot or a damaged copy)")


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload, after `verify`; raises CorruptCheckpoint when the file is not a loadable,
    intact checkpoint. A missing file or an error of the machine (permissions, I/O, memory) is
    not corruption and propagates; torch reports a torn zip as OSError(EINVAL), which is."""
    verify(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        if e.errno in _ENVIRONMENT_ERRNOS or not os.path.isfile(path):
            raise
        raise CorruptCheckpoint(path, f"{type(e).__name__}: {str(e)[:200]}") from e
    except Exception as e:  # noqa: BLE001 - torch reports damage as many types (zip, pickle, EOF)
        raise CorruptCheckpoint(path, f"{type(e).__name__}: {str(e)[:200]}") from e
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CorruptCheckpoint(path, f"missing {', '.join(missing)}")
    return payload


def restore(payload: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    set_rng_state(payload["rng"])
