"""Dispatch a recorded study on Ray: submit work items largest-first, collect each result,
retry or fail it, and report the study's end.

Each tick reads one ledger snapshot (the rows and the cancel request) for the cancel check and
the progress display; a submission reads only its own work item's rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

from trainer import mlflow_contract as mc

from ..store import tracking
from ..store.bookkeeping import adopt_children
from ..store.ledger import Ledger, LedgerRow, Snapshot, StudyLedger
from ..store.states import RunState
from ..study.config import StudyConfig
from ..study.grid import PlannedRun, WorkItem, work_items
from .messages import RunAssignment, RunReport, TrunkAssignment, WorkPayload
from .progress import Progress

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
log = logging.getLogger(__name__)


@dataclass
class StudyOutcome:
    exit_code: int
    states: dict[str, str] = field(default_factory=dict)  # run_key -> final state
    messages: list[str] = field(default_factory=list)
    experiment_id: str | None = None
    parent_run_id: str | None = None


def tracking_timeout_s() -> float:
    """SCALELAB_TRACKING_TIMEOUT_S (default 60): how long creating runs at dispatch, and a
    run's end, wait for an unreachable MLflow store before failing."""
    return float(os.environ.get("SCALELAB_TRACKING_TIMEOUT_S", 60))


# --------------------------------------------------------------------------- a work item's runs


def _item_keys(item: WorkItem) -> list[str]:
    return [p.key for p in item.runs] + ([item.trunk_key] if item.trunk_key else [])


def adopt_child_runs(c, exp_id: str, ledger: Ledger, study: str) -> None:
    """Child runs a crashed driver created but did not record in the ledger are adopted (by
    their run_key tag), never duplicated."""
    adopt_children(ledger, study, tracking.children_by_key(tracking.child_runs(c, exp_id)))


def ensure_child_runs(
    cfg: StudyConfig, settings: tracking.Settings, item: WorkItem, ledger: Ledger, exp_id: str, parent: str
) -> dict[str, LedgerRow]:
    """Create the MLflow runs of a work item (its points, its wsd trunk) as it is dispatched:
    a run's Duration is then its own training time, and a queued point is no RUNNING run.
    Only the driver creates runs; the ledger records each id at once (adopted after a crash).
    Returns the item's rows (run key -> row, trunk included) with their MLflow run ids."""
    study = ledger.for_study(cfg.study)
    rows = study.rows_of(_item_keys(item))
    todo = [p for p in item.runs if not rows[p.key].mlflow_run_id and not rows[p.key].done]
    trunk_key = item.trunk_key if item.trunk_key and not rows[item.trunk_key].mlflow_run_id else None
    if not todo and not trunk_key:
        return rows
    c = tracking.client(settings.tracking_uri)
    if trunk_key:
        p = max(item.runs, key=lambda r: r.tokens)
        run_id = tracking.create_child_run(
            c,
            exp_id,
            parent,
            cfg.study,
            trunk_key,
            f"{p.label}-trunk-s{p.spec.seed}",
            mc.ROLE_TRUNK,
            {mc.PARAM_RUN_KEY: trunk_key, "n_params": p.n_params, "schedule": "wsd"},
        )
        study.record_mlflow_run(trunk_key, run_id)
        rows[trunk_key] = replace(rows[trunk_key], mlflow_run_id=run_id)
    for p in todo:
        params = p.mlflow_params()  # the trainer adds its own (true_entropy, ...)
        run_id = tracking.create_child_run(
            c,
            exp_id,
            parent,
            cfg.study,
            p.key,
            p.run_name,
            mc.ROLE_POINT,
            params,
            {mc.LABEL: p.label, mc.EXPERTS: str(p.spec.model.experts)},
            metrics={k: getattr(p, k) for k in mc.POINT_METRICS},
        )
        study.record_mlflow_run(p.key, run_id)
        rows[p.key] = replace(rows[p.key], mlflow_run_id=run_id)
    return rows


def _payload(
    item: WorkItem, cfg: StudyConfig, settings: tracking.Settings, ledger: Ledger, rows: dict[str, LedgerRow]
) -> WorkPayload:
    """The work item as the worker receives it: a fresh attempt per run not yet done (and for
    its wsd trunk), with the MLflow run ids ensure_child_runs recorded."""
    study = ledger.for_study(cfg.study)
    runs = []
    for p in item.runs:
        row = rows[p.key]
        if row.done:
            continue
        runs.append(
            RunAssignment(
                run_key=p.key,
                spec=p.spec.to_dict(),
                lease=study.start_attempt(p.key),
                mlflow_run_id=_mlflow_id(row),
                attempt=row.attempts + 1,
                checkpoint_dir=_checkpoint_dir(row),
            )
        )
    trunk, trunk_dir = None, None
    if item.trunk_key:
        t = rows[item.trunk_key]
        trunk = TrunkAssignment(
            run_key=t.run_key, lease=study.start_attempt(t.run_key), mlflow_run_id=_mlflow_id(t)
        )
        trunk_dir = t.checkpoint_dir
    return WorkPayload(
        study=cfg.study,
        runs=tuple(runs),
        tracking_uri=settings.tracking_uri,
        ledger_uri=settings.ledger_uri,
        num_cpus=cfg.resources.num_cpus,
        tracking_timeout_s=tracking_timeout_s(),
        trunk=trunk,
        trunk_dir=trunk_dir,
    )


def _checkpoint_dir(row: LedgerRow) -> str:
    if not row.checkpoint_dir:  # record_plan writes it with the row
        raise RuntimeError(f"run {row.run_key} has no checkpoint directory in the ledger")
    return row.checkpoint_dir


def _mlflow_id(row: LedgerRow) -> str:
    if not row.mlflow_run_id:  # ensure_child_runs records it before dispatch
        raise RuntimeError(f"run {row.run_key} has no MLflow run at dispatch")
    return row.mlflow_run_id


# --------------------------------------------------------------------------- results


def _handle_results(
    results: list[RunReport], study: str, ledger: Ledger, settings: tracking.Settings
) -> tuple[bool, str]:
    """Returns (retry?, reason). Bug-class failures and divergence are never retried."""
    for r in results:
        if r.state is RunState.FAILED:
            if r.bug or r.storage:
                _finish_mlflow(ledger.for_study(study), settings, r.run_key, RunState.FAILED)
                return False, r.message
            return True, r.message or "failed"
        if r.state is RunState.FENCED:
            return False, r.message
    return False, ""


def _finish_mlflow(
    study: StudyLedger, settings: tracking.Settings, key: str, outcome: RunState, row: LedgerRow | None = None
) -> None:
    """End a run's MLflow run with `outcome`; best effort (the ledger holds the state)."""
    row = row if row is not None else study.row(key)
    if row and row.mlflow_run_id:
        try:
            tracking.finish_run(tracking.client(settings.tracking_uri), row.mlflow_run_id, outcome)
        except Exception as e:  # noqa: BLE001 - any store error: the ledger has it
            log.warning(
                "run %s: MLflow run %s not ended as %s (%s: %s)",
                key,
                row.mlflow_run_id,
                outcome,
                type(e).__name__,
                str(e)[:300],
            )


# --------------------------------------------------------------------------- the loop


class Dispatcher:
    """Runs one recorded study on the connected Ray: at most `limit` work items at once,
    largest first; a failed item is retried up to resources.max_retries (from its checkpoint),
    then its runs are failed; cancel and unusable checkpoint storage stop new submissions."""

    def __init__(
        self,
        cfg: StudyConfig,
        settings: tracking.Settings,
        planned: list[PlannedRun],
        ledger: Ledger,
        *,
        limit: int,
        mlflow_ids: tuple[str, str],
    ):
        self.cfg, self.settings, self.planned = cfg, settings, planned
        self.ledger, self.study = ledger, ledger.for_study(cfg.study)
        self.limit, self.mlflow_ids = limit, mlflow_ids
        self.queue: list[WorkItem] = []
        self.in_flight: dict[Any, WorkItem] = {}
        self.retries: dict[str, int] = {}  # per work item (its first run key), this invocation
        self.messages: list[str] = []
        self.cancelled = False

    def run(self, progress: Progress) -> StudyOutcome:
        import ray

        from .worker import execute

        res = self.cfg.resources
        remote = ray.remote(execute).options(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=0)
        snap = self.study.snapshot()
        self.queue = [w for w in work_items(self.planned) if not all(snap.rows[p.key].done for p in w.runs)]
        while self.queue or self.in_flight:
            if snap.cancel and not self.cancelled:
                self._stop(f"cancel requested ({snap.cancel}): starting no new runs")
            self._submit(remote)
            if not self.in_flight:
                break
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                self._collect(ref)
            snap = self.study.snapshot()  # the tick's one read
            progress.update(snap.rows)
        progress.update(snap.rows)
        return self._outcome(snap)

    def _stop(self, why: str) -> None:
        self.cancelled = True
        self.messages.append(why)

    def _submit(self, remote: Any) -> None:
        while self.queue and not self.cancelled and len(self.in_flight) < self.limit:
            item = self.queue.pop(0)
            rows = self._create_runs(item)
            self.in_flight[remote.remote(_payload(item, self.cfg, self.settings, self.ledger, rows))] = item

    def _create_runs(self, item: WorkItem) -> dict[str, LedgerRow]:
        """ensure_child_runs, retried while the store is briefly unreachable."""
        exp_id, parent = self.mlflow_ids
        return tracking.retry_store(
            lambda: ensure_child_runs(self.cfg, self.settings, item, self.ledger, exp_id, parent),
            tracking_timeout_s(),
            lambda: adopt_child_runs(
                tracking.client(self.settings.tracking_uri), exp_id, self.ledger, self.cfg.study
            ),
        )

    def _collect(self, ref: Any) -> None:
        import ray
        from ray.exceptions import RayError

        item = self.in_flight.pop(ref)
        try:
            results = ray.get(ref)
            retry, why = _handle_results(results, self.cfg.study, self.ledger, self.settings)
            if any(r.storage for r in results) and not self.cancelled:  # every later run would fail
                self._stop("checkpoint storage unusable: starting no new runs: " + why.splitlines()[0][:300])
        except RayError as e:  # worker or node died: retry from checkpoint
            retry, why = True, f"{type(e).__name__}: {e}"[-3000:]
        if retry and not self.cancelled:
            self._retry_or_fail(item, why)

    def _retry_or_fail(self, item: WorkItem, why: str) -> None:
        item_id, max_retries = item.runs[0].key, self.cfg.resources.max_retries
        n = self.retries.get(item_id, 0)
        if n < max_retries:
            self.retries[item_id] = n + 1
            self.messages.append(
                f"retrying {item.runs[0].label} ({n + 1}/{max_retries}): {why.splitlines()[-1][:200]}"
            )
            self.queue.insert(0, item)
            return
        rows = self.study.rows_of(p.key for p in item.runs)
        for p in item.runs:
            if not rows[p.key].done:
                self.study.fail(p.key, why)
                _finish_mlflow(self.study, self.settings, p.key, RunState.FAILED, rows[p.key])

    def _outcome(self, snap: Snapshot) -> StudyOutcome:
        """The study's end: runs stopped by `cancel --now` marked killed, what did not finish
        reported, and the exit code."""
        if self.cancelled and snap.cancel == "now":
            for p in self.planned:
                r = snap.rows[p.key]
                if r.state in (RunState.RUNNING, RunState.KILLED):
                    self.study.kill(p.key)
                    _finish_mlflow(self.study, self.settings, p.key, RunState.KILLED, r)
            snap = self.study.snapshot()
        states = {p.key: snap.rows[p.key].state.value for p in self.planned}
        for p in self.planned:  # results that are not plain successes, reported
            r = snap.rows[p.key]
            if r.state != RunState.FINISHED:
                last = (r.error or "").strip().splitlines()[-1:] or [""]
                self.messages.append(f"{p.label} D={p.tokens:.3g} ({p.key}): {r.state} {last[0][:200]}")
        if any(s == RunState.FAILED for s in states.values()):
            code = EXIT_FAILED
        elif all(RunState(s).is_result for s in states.values()):
            code = EXIT_OK
        else:
            code = EXIT_FAILED  # cancelled or killed before the end
        return StudyOutcome(exit_code=code, states=states, messages=self.messages)
