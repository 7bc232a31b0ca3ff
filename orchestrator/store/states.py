"""One vocabulary for a run's state: the ledger column, `scalelab status` (text and --json),
the progress display and the MLflow `scalelab.outcome` tag all use `RunState` values.

The trainer (which never imports the orchestrator) reports `RunResult.status` in its own words
(finished | diverged | stopped | failed); `RunState.from_trainer` is the one place they map.
Values are plain strings, stored as such: databases written before this Enum stay readable.
"""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    """A run's state; `str(state)` and f-strings give the stored value ("finished", ...)."""

    PENDING = "pending"  # planned, never dispatched (or reset to run again)
    RUNNING = "running"  # leased by a worker
    FINISHED = "finished"  # a result
    DIVERGED = "diverged"  # a result too: the loss blew up (never retried)
    FAILED = "failed"  # an error, retried up to resources.max_retries
    KILLED = "killed"  # stopped on request (cancel --now, Ctrl-C)
    STOPPED = "stopped"  # the trainer's word for killed (never stored by the worker)
    INTERRUPTED = "interrupted"  # `status` view of a running row whose driver is gone
    FENCED = "fenced"  # worker report only: a newer attempt owns the run

    def __str__(self) -> str:
        return self.value

    # hash as the value (Enum hashes the name), so "finished" and FINISHED are one dict key
    __hash__ = str.__hash__

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def is_result(self) -> bool:
        """A result (finished or diverged): never run again."""
        return self in TERMINAL

    @classmethod
    def of(cls, stored: str | None) -> RunState:
        """The state of a ledger row's stored value; no row yet is PENDING."""
        return cls.PENDING if stored is None else cls(stored)

    @classmethod
    def from_trainer(cls, status: str) -> RunState:
        """The state the worker records for a trainer `RunResult.status`."""
        return _FROM_TRAINER.get(status, cls.FAILED)


TERMINAL: tuple[RunState, ...] = (RunState.FINISHED, RunState.DIVERGED)
# States a ledger row can hold (FENCED is a worker report, never written).
LEDGER_STATES: tuple[RunState, ...] = tuple(s for s in RunState if s is not RunState.FENCED)
# Values of the MLflow `scalelab.outcome` tag, and the MLflow run status each one ends with.
OUTCOMES: dict[RunState, str] = {
    RunState.FINISHED: "FINISHED",
    RunState.DIVERGED: "FAILED",
    RunState.FAILED: "FAILED",
    RunState.KILLED: "KILLED",
}
_FROM_TRAINER: dict[str, RunState] = {
    "finished": RunState.FINISHED,
    "diverged": RunState.DIVERGED,
    "stopped": RunState.KILLED,
    "failed": RunState.FAILED,
}
