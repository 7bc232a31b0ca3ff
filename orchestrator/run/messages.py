"""What crosses the driver/worker boundary: the work item the scheduler sends to
`worker.execute` and the report the worker returns per run. Frozen dataclasses of plain data
(they pickle through Ray as they are); the run spec travels as `RunSpec.to_dict()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..store.states import RunState


@dataclass(frozen=True)
class RunAssignment:
    """One run of a work item: which point, under which lease, logging to which MLflow run."""

    run_key: str
    spec: dict[str, Any]  # RunSpec.to_dict()
    lease: str  # the ledger lease this attempt holds
    mlflow_run_id: str
    attempt: int  # 1 for the first attempt
    checkpoint_dir: str


@dataclass(frozen=True)
class TrunkAssignment:
    """The shared wsd trunk of a work item's branches."""

    run_key: str
    lease: str
    mlflow_run_id: str


@dataclass(frozen=True)
class WorkPayload:
    """A work item as a worker receives it: one run, or every branch of one wsd trunk."""

    study: str
    runs: tuple[RunAssignment, ...]
    tracking_uri: str
    ledger_uri: str
    num_cpus: float
    tracking_timeout_s: float = 60.0  # how long a run's end waits for an unreachable store
    trunk: TrunkAssignment | None = None
    trunk_dir: str | None = None


@dataclass(frozen=True)
class RunReport:
    """A worker's answer for one run. `state` is what the ledger now holds for it, or FENCED
    (a newer attempt owns the run; nothing was written)."""

    run_key: str
    state: RunState
    message: str = ""
    bug: bool = False  # bug-class failure: a retry cannot help
    storage: bool = False  # the checkpoint storage is unusable: stop the study
    val_loss: float | None = None
    device: str | None = None
    node_id: str | None = None
    pid: int | None = None
    result: dict[str, Any] = field(default_factory=dict)  # trainer RunResult as a dict

    @property
    def ok(self) -> bool:
        """A result (finished or diverged): later branches of the trunk may go on."""
        return self.state.is_result
