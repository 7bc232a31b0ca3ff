"""Which checkpoint a run resumes from, and what happens to damaged ones.

A run's own checkpoint is `checkpoint_dir/ckpt.pt`, with the one it replaced kept beside it
(`checkpoint.previous_path`). Resuming takes the newest loadable of the two; a corrupt file is
set aside (`<name>.corrupt`), never fatal, and noted: the notes become a log line, the
`scalelab.checkpoint_recovery` tag and `RunResult.extra["checkpoint_recovery"]`. A checkpoint
of another run (its key differs from the spec's) is refused: a changed spec needs a fresh dir.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .mlflow_contract import CHECKPOINT_RECOVERY
from .spec import RunSpec

_log = logging.getLogger("scalelab.trainer")
CKPT_NAME = "ckpt.pt"


def checkpoint_info(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """(step, tokens, run_id, run_key, finished) of the run checkpoint in a directory, or None:
    lets a caller find the MLflow run id to resume before it builds the sink."""
    path = Path(checkpoint_dir) / CKPT_NAME
    if not path.exists():
        return None
    p = ckpt.load(path)
    extra = p["extra"]
    return {
        "step": p["step"],
        "tokens": p["tokens"],
        "run_id": extra.get("run_id"),
        "run_key": extra.get("run_key"),
        "finished": bool(extra.get("finished")),
        "val_loss": extra.get("val_loss"),
        "train_loss": extra.get("train_loss"),
    }


class Recovery:
    """Finds and loads a run's checkpoints (its own, or its wsd trunk's), setting corrupt ones
    aside and keeping notes of what it did."""

    def __init__(self, spec: RunSpec, checkpoint_dir: Path):
        self.spec = spec
        self.own = checkpoint_dir / CKPT_NAME
        self.notes: list[str] = []  # corrupt checkpoints set aside, for the log and tags

    def load_own(self) -> dict[str, Any] | None:
        """The payload of the run's newest loadable checkpoint (ckpt.pt, else the previous one
        kept beside it); None: nothing to resume."""
        for path in (self.own, ckpt.previous_path(self.own)):
            if path.exists():
                try:
                    return self.load(path, own=True)
                except ckpt.CorruptCheckpoint as e:
                    self.set_aside(e)
        return None

    def load(self, path: Path, *, own: bool) -> dict[str, Any]:
        """A checkpoint of this run (`own`) or of its trunk, loaded on the CPU (RNG states must
        stay CPU tensors); raises CorruptCheckpoint, or RuntimeError for another run's."""
        payload = ckpt.load(path)
        extra = payload["extra"]
        key = "run_key" if own else "trunk_key"
        expected = self.spec.key() if own else self.spec.trunk_key()
        legacy = self.spec.legacy_key() if own else self.spec.legacy_trunk_key()
        if extra.get(key) not in (expected, legacy):  # legacy: keys of older stores
            raise RuntimeError(
                f"{path} belongs to {key} {extra.get(key)}, not {expected}; "
                "use a fresh checkpoint_dir for a changed spec"
            )
        return payload

    def set_aside(self, e: ckpt.CorruptCheckpoint) -> None:
        moved = ckpt.set_aside(e.path)
        self.notes.append(f"checkpoint {e.path} is corrupt ({e.reason}); set aside as {moved}")

    def report(self, resumed: bool, tokens: int) -> dict[str, str]:
        """Say what happened to corrupt checkpoints: a log line and an MLflow tag ({} if none).
        `resumed`: the run continued its own checkpoint; `tokens`: where it continues."""
        if not self.notes:
            return {}
        how = (
            f"resumed from an earlier checkpoint at {tokens} tokens"
            if resumed
            else f"restarted the branch from its trunk at {tokens} tokens"
            if tokens
            else "restarted the run from scratch"
        )
        note = "; ".join(self.notes) + f"; {how}"
        _log.warning("%s", note)
        return {CHECKPOINT_RECOVERY: note[-4000:]}
