"""The wsd trunk protocol: the stable phase (up to a branch's cooldown start S) is shared by
every branch of one trunk, so it is trained once.

Files in `trunk_dir` (default `checkpoint_dir/trunk`): `stable_<tokens:015d>.pt` (periodic,
only the newest kept) and `branch_<tokens:015d>.pt` (the trunk state at each cooldown start,
kept). A branch without a checkpoint of its own continues from the newest trunk checkpoint at or
before its S, logs the stable steps to the trunk's sink, saves `branch_<S>.pt`, then cools down
to its budget in its own checkpoint_dir, logging to its own sink.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from . import checkpoint as ckpt
from .recovery import Recovery
from .sinks import MetricSink, deliver


class Branch(Protocol):
    """What the protocol needs of the run that trains a branch."""

    @property
    def tokens(self) -> int: ...

    def run_phase(
        self, sink: MetricSink, end_step: int, save: Callable[[], None], guard: tuple[MetricSink, ...] = ()
    ) -> None: ...

    def save(self, path: Path, sink: MetricSink) -> None: ...

    def restore(self, payload: dict[str, Any], *, own: bool) -> None: ...

    def run_params(self) -> dict[str, Any]: ...

    def checkpointed(self) -> None: ...


def trunk_checkpoints(trunk_dir: Path | None) -> list[tuple[int, Path]]:
    """(tokens, path) of the trunk's checkpoints, oldest first."""
    if trunk_dir is None or not trunk_dir.exists():
        return []
    out = []
    for f in trunk_dir.iterdir():
        m = re.fullmatch(r"(stable|branch)_(\d+)\.pt", f.name)
        if m:
            out.append((int(m.group(2)), f))
    return sorted(out)


class Trunk:
    """One branch's side of its trunk. `cooldown_start_step` is S in optimizer steps."""

    def __init__(
        self,
        branch: Branch,
        recovery: Recovery,
        trunk_dir: Path | None,
        *,
        wsd: bool,
        cooldown_start_step: int,
        total_steps: int,
        tokens_per_step: int,
    ):
        self.branch, self.recovery, self.dir = branch, recovery, trunk_dir
        self.start_step, self.tokens_per_step = cooldown_start_step, tokens_per_step
        # wsd with a cooldown of at least one step (a tiny run may round it away)
        self.shared = wsd and cooldown_start_step < total_steps

    def enter(self, trunk_sink: MetricSink, own_dir: Path) -> None:
        """A branch without a checkpoint of its own: continue the newest trunk state at or
        before S (a corrupt one is set aside), else start the trunk (its params logged)."""
        if self.dir is None:
            self.dir = own_dir / "trunk"
        start = self.start_step * self.tokens_per_step
        for _, f in reversed([(t, f) for t, f in trunk_checkpoints(self.dir) if t <= start]):
            try:
                payload = self.recovery.load(f, own=False)
            except ckpt.CorruptCheckpoint as e:
                self.recovery.set_aside(e)
                continue
            self.branch.restore(payload, own=False)
            return
        trunk_sink.log_params(self.branch.run_params())

    def stable_phase(self, tsink: MetricSink) -> None:
        """Train the shared trunk up to S, deliver its metrics (closing the trunk's sink:
        bounded wait, raises while the store is down), then save the branch checkpoint, never
        over metrics the store has not received."""
        self.branch.run_phase(tsink, self.start_step, lambda: self.save(tsink, "stable"))
        deliver(tsink)
        if not tsink.pending:
            self.save(tsink, "branch")
            self.branch.checkpointed()

    def save(self, sink: MetricSink, kind: str) -> None:
        assert self.dir is not None
        path = self.dir / f"{kind}_{self.branch.tokens:015d}.pt"
        self.branch.save(path, sink)
        if kind == "stable":  # keep only the newest periodic trunk checkpoint
            for _, f in trunk_checkpoints(self.dir):
                if f.name.startswith("stable_") and f != path:
                    f.unlink(missing_ok=True)
