"""Reconcile the ledger with the MLflow store before a study is dispatched.

Each step is idempotent and runs on the driver: rekey rows written under the older run-key
scheme, forget MLflow runs that no longer exist (a lost or recreated store), adopt complete
results MLflow still holds (never overwrite a FINISHED run as failed), and reuse points that
another study of the same store already finished.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from trainer import mlflow_contract as mc
from trainer.spec import RunSpec

from ..study.config import StudyConfig
from ..study.grid import PlannedRun
from . import tracking
from .ledger import Ledger, LedgerRow
from .states import RunState

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- legacy run keys


def _spec_of(row: LedgerRow, specs: dict[tuple[str, str], str]) -> RunSpec | None:
    text = specs.get((row.study, row.run_key)) if row.kind == "point" else None
    return _parse_spec(text) if text else None


def _parse_spec(text: str) -> RunSpec | None:
    try:
        return RunSpec.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError):  # a spec this version no longer reads
        return None


def migrate_legacy_keys(ledger: Ledger, c=None) -> int:
    """Rows keyed by the older scheme (run-time settings hashed into the key) get today's key,
    keeping their state, MLflow run and checkpoint; their trunks follow. Returns rows rekeyed."""
    rows, specs = ledger.rows(), ledger.specs()
    trunks: dict[tuple[str, str], str] = {}
    n = 0
    for row in rows:
        spec = _spec_of(row, specs)
        if spec is None or row.run_key == spec.key() or row.run_key != spec.legacy_key():
            continue
        values: dict[str, Any] = {}
        if row.trunk_key:
            values["trunk_key"] = trunks[(row.study, row.trunk_key)] = spec.trunk_key()
        ledger.rekey(row.study, row.run_key, spec.key(), **values)
        _retag(c, row.mlflow_run_id, row.run_key, spec.key())
        n += 1
    for row in rows:
        new = trunks.get((row.study, row.run_key))
        if row.kind == "trunk" and new:
            ledger.rekey(row.study, row.run_key, new, trunk_key=new)
            _retag(c, row.mlflow_run_id, row.run_key, new)
    return n


def _retag(c, run_id: str | None, old: str, new: str) -> None:
    if c is None or not run_id:
        return
    try:
        c.set_tag(run_id, mc.RUN_KEY, new)
        c.set_tag(run_id, mc.LEGACY_RUN_KEY, old)
    except Exception as e:  # noqa: BLE001 - a lost run is found and handled by forget_lost_runs
        log.warning("could not retag MLflow run %s with its new run key: %s", run_id, e)


def legacy_fingerprints(cfg: StudyConfig, ledger: Ledger | None) -> tuple[str, ...]:
    """The fingerprints this study had under the older scheme: with this file's run-time
    settings, and with those the study's recorded runs ran with."""
    out = {tracking.fingerprint_hash(cfg.legacy_fingerprint())}
    if ledger is not None:  # spec_json only: readable in every ledger version
        for text in ledger.specs(cfg.study).values():
            spec = _parse_spec(text)
            if spec is not None:
                r = spec.recipe
                out.add(
                    tracking.fingerprint_hash(
                        cfg.legacy_fingerprint(
                            device=r.device,
                            compile=r.compile,
                            eval_interval_tokens=r.eval_interval_tokens,
                            checkpoint_interval_tokens=r.checkpoint_interval_tokens,
                            eval_schedule=r.eval_schedule,
                        )
                    )
                )
                break
    return tuple(sorted(out))


# --------------------------------------------------------------------------- MLflow vs ledger


def forget_lost_runs(ledger: Ledger, study: str, live_ids: set[str]) -> list[str]:
    """Rows whose MLflow run no longer exists (store lost or recreated, run or experiment
    deleted) lose that link; their results are re-logged from the checkpoint or retrained.
    Returns the keys affected."""
    sl = ledger.for_study(study)
    lost = []
    for row in sl.snapshot().rows.values():
        if row.mlflow_run_id and row.mlflow_run_id not in live_ids:
            if row.state is RunState.RUNNING:  # its attempt may still be alive
                sl.forget_mlflow_run(row.run_key)
            else:
                sl.reset(row.run_key)
            lost.append(row.run_key)
    return lost


def adopt_children(ledger: Ledger, study: str, children: dict[str, Any]) -> list[str]:
    """Link rows without an MLflow run to the run already in the experiment (made by a driver
    that crashed, or before the ledger was lost); a run that holds a complete result (FINISHED
    with its loss, or diverged) is that row's result. Returns the keys adopted as results."""
    sl = ledger.for_study(study)
    results = []
    for row in sl.snapshot().rows.values():
        run = children.get(row.run_key)
        if row.mlflow_run_id or run is None:
            continue
        outcome = tracking.recorded_outcome(run) if row.kind == "point" else None
        if outcome and not row.done:
            val_loss = run.data.metrics.get(mc.VAL_LOSS)
            sl.adopt_result(
                row.run_key, run.info.run_id, RunState(outcome), val_loss=val_loss, tokens=row.tokens
            )
            results.append(row.run_key)
        else:
            sl.record_mlflow_run(row.run_key, run.info.run_id)
    return results


def reuse_finished(
    c, ledger: Ledger, study: str, exp_id: str, parent: str, planned: list[PlannedRun]
) -> list[str]:
    """Points of this study not yet started that another study of the store finished: copy
    that result in as this study's own point run instead of training it again."""
    sl = ledger.for_study(study)
    rows = sl.snapshot().rows
    todo = [
        p
        for p in planned
        if rows[p.key].state is RunState.PENDING
        and not rows[p.key].attempts
        and not rows[p.key].mlflow_run_id
    ]
    sources = ledger.finished_elsewhere(study, [p.key for p in todo]) if todo else {}
    reused = []
    for p in todo:
        src = sources.get(p.key)
        if src is None or not src.mlflow_run_id or not _finished_in_mlflow(c, src.mlflow_run_id):
            continue
        run_id = tracking.copy_point_run(c, src.mlflow_run_id, exp_id, parent, study, p.key, p.run_name)
        sl.reuse(p.key, src, run_id)
        reused.append(p.key)
    return reused


def _finished_in_mlflow(c, run_id: str | None) -> bool:
    try:
        run = c.get_run(run_id)
    except Exception as e:  # noqa: BLE001 - gone: not a result to reuse, train it instead
        log.debug("MLflow run %s not readable (%s); not reused", run_id, e)
        return False
    return run.info.lifecycle_stage == "active" and tracking.recorded_outcome(run) == RunState.FINISHED
