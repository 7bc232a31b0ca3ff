"""Run a study: validate, hold it (one driver, Ray up), record the plan, dispatch, report.

Order of effects (so that bad input writes nothing): expand the grid and check every address
and the experiment name read-only; attach to / start Ray and check that some node can hold one
run; only then take the study's driver lock, create the MLflow store, experiment, parent and
child runs and the ledger rows, and dispatch (dispatcher.Dispatcher).

`driver_session` is that hold: `run --adaptive` runs all its rounds through one session (one
lock, one Ray), recording each round's new points as it comes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from trainer import mlflow_contract as mc

from ..store import bookkeeping, mlflow_view, tracking
from ..store.ledger import Ledger, spec_json
from ..store.states import RunState
from ..study.config import StudyConfig
from ..study.grid import PlannedRun, expand
from .dispatcher import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, Dispatcher, StudyOutcome
from .driverlock import StudyBusy, busy_message, driver_alive, hold_study
from .progress import Progress
from .ray_connection import check_address, check_resources, ray_session

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "StudyOutcome", "run_study", "driver_session"]
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- read-only checks


def validate(cfg: StudyConfig, settings: tracking.Settings, address: str | None) -> list[PlannedRun]:
    """Everything that can be checked without writing anything. Raises StudyError."""
    planned = expand(cfg)
    from ..study.memory import check_memory
    from .hostinfo import available_memory_bytes

    check_memory(cfg, planned, None if address else available_memory_bytes())
    from ..study.corpus_plan import check_epochs

    check_epochs(cfg.data, planned)
    tracking.check_tracking_uri(settings.tracking_uri)
    if settings.ledger_uri != settings.tracking_uri:
        tracking.check_ledger_uri(settings.ledger_uri, flag="--ledger-uri/SCALELAB_LEDGER_URI")
    check_address(address)
    tracking.check_experiment(
        settings.tracking_uri,
        cfg.study,
        tracking.fingerprint_hash(cfg.fingerprint()),
        legacy=_legacy_fingerprints(cfg, settings),
    )
    return planned


def _read_only_ledger(settings: tracking.Settings) -> Ledger | None:
    """The ledger opened without creating anything; None when there is none (or no driver)."""
    if not tracking.store_exists(settings.ledger_uri):
        return None
    try:
        return Ledger(settings.ledger_uri, create=False)
    except ImportError:  # no driver for this URI: reported where it is used
        return None


def _legacy_fingerprints(cfg: StudyConfig, settings: tracking.Settings) -> tuple[str, ...]:
    """Read-only: the study's fingerprints under the older scheme (see bookkeeping)."""
    import sqlalchemy as sa

    ledger = _read_only_ledger(settings)
    if ledger is None:
        return bookkeeping.legacy_fingerprints(cfg, None)
    try:
        return bookkeeping.legacy_fingerprints(cfg, ledger)
    except sa.exc.SQLAlchemyError:  # no ledger tables yet: only this file's settings
        return bookkeeping.legacy_fingerprints(cfg, None)
    finally:
        ledger.dispose()


def refuse_if_held(cfg: StudyConfig, settings: tracking.Settings) -> None:
    """Read-only early check (before Ray starts): StudyBusy if a live driver holds the study."""
    import sqlalchemy as sa

    ledger = _read_only_ledger(settings)
    if ledger is None:
        return
    try:
        holder = ledger.study(cfg.study)
    except sa.exc.SQLAlchemyError:  # no ledger tables yet (or an older schema)
        return
    finally:
        ledger.dispose()
    if holder is not None and driver_alive(holder):
        raise StudyBusy("study", busy_message(cfg.study, holder, cfg.source_path or "STUDY.yaml"))


# --------------------------------------------------------------------------- the plan, recorded


@dataclass(frozen=True)
class StudyRecord:
    """The study's MLflow home as record_plan opened it, and the experiment's child runs then
    (run key -> run; points planned later in the session are adopted from it)."""

    experiment_id: str
    parent_run_id: str
    children: dict[str, Any]


def open_record(
    cfg: StudyConfig, settings: tracking.Settings, ledger: Ledger, notes: list[str]
) -> StudyRecord:
    """Create the store, experiment and parent run; reconcile the ledger with MLflow (legacy
    keys, lost runs). Once per driver session."""
    fp = tracking.fingerprint_hash(cfg.fingerprint())
    c = tracking.client(settings.tracking_uri)
    exp_id = tracking.ensure_experiment(c, cfg.study, fp, settings.artifact_root)
    mlflow_view.ensure_view(c, exp_id)
    parent = tracking.ensure_parent_run(c, exp_id, cfg.study, cfg.description)
    ledger.for_study(cfg.study).record_study(fingerprint=fp, experiment_id=exp_id, parent_run_id=parent)
    bookkeeping.migrate_legacy_keys(ledger, c)
    runs = tracking.child_runs(c, exp_id)
    lost = bookkeeping.forget_lost_runs(ledger, cfg.study, {r.info.run_id for r in runs})
    if lost:
        notes.append(
            f"{len(lost)} run(s) recorded in the ledger are missing from the MLflow store "
            "(lost or deleted): re-logging them from their checkpoints, else retraining"
        )
    return StudyRecord(exp_id, parent, tracking.children_by_key(runs))


def add_points(
    cfg: StudyConfig,
    settings: tracking.Settings,
    planned: list[PlannedRun],
    ledger: Ledger,
    record: StudyRecord,
    *,
    reuse: bool,
    notes: list[str],
) -> None:
    """Insert the study's ledger rows still missing (a point per run, a row per wsd trunk),
    adopt results MLflow holds for them, and reuse points other studies finished."""
    ledger.for_study(cfg.study).plan(_plan_rows(cfg, settings, planned))
    adopted = bookkeeping.adopt_children(ledger, cfg.study, record.children)
    if adopted:
        notes.append(f"{len(adopted)} run(s) adopted as results from the MLflow store")
    if reuse:
        c = tracking.client(settings.tracking_uri)
        reused = bookkeeping.reuse_finished(
            c, ledger, cfg.study, record.experiment_id, record.parent_run_id, planned
        )
        if reused:
            notes.append(
                f"{len(reused)} point(s) reused from other studies of this store "
                f"(tagged {mc.REUSED_FROM}; `--no-reuse` retrains them)"
            )


def record_plan(
    cfg: StudyConfig,
    settings: tracking.Settings,
    planned: list[PlannedRun],
    ledger: Ledger,
    *,
    reuse: bool = True,
    messages: list[str] | None = None,
) -> tuple[str, str]:
    """open_record, then add_points: the study's MLflow home, reconciled, and its ledger rows
    (child runs are created at dispatch); idempotent. Returns (experiment_id, parent_run_id)."""
    notes = messages if messages is not None else []
    record = open_record(cfg, settings, ledger, notes)
    add_points(cfg, settings, planned, ledger, record, reuse=reuse, notes=notes)
    return record.experiment_id, record.parent_run_id


def _plan_rows(
    cfg: StudyConfig, settings: tracking.Settings, planned: list[PlannedRun]
) -> list[dict[str, Any]]:
    """One ledger row per point, and per wsd trunk (sized by its longest branch)."""
    trunks: dict[str, PlannedRun] = {}
    rows = []
    for p in planned:
        rows.append(
            {
                "run_key": p.key,
                "kind": "point",
                "trunk_key": p.trunk_key,
                "tokens": p.tokens,
                "flops": p.flops,
                "spec_json": spec_json(p.spec.to_dict()),
                "checkpoint_dir": settings.checkpoint_dir(cfg.study, p.key),
            }
        )
        if p.trunk_key and (p.trunk_key not in trunks or trunks[p.trunk_key].tokens < p.tokens):
            trunks[p.trunk_key] = p
    for tk, p in trunks.items():
        rows.append(
            {
                "run_key": tk,
                "kind": "trunk",
                "trunk_key": tk,
                "tokens": p.tokens,
                "flops": 0.0,
                "spec_json": None,
                "checkpoint_dir": settings.trunk_dir(cfg.study, tk),
            }
        )
    return rows


# --------------------------------------------------------------------------- one driver session


STOP_GRACE_S = 20.0


def stop_running_runs(ledger: Ledger, study: str, grace_s: float = STOP_GRACE_S) -> None:
    """Ask running runs to checkpoint and stop (as `cancel --now`), wait up to grace_s for them,
    then leave: the next `scalelab run` clears the request and resumes from the checkpoints."""
    sl = ledger.for_study(study)
    try:
        sl.request_cancel("now")
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(
            r.state is RunState.RUNNING for r in sl.snapshot().rows.values()
        ):
            time.sleep(0.5)
    except Exception as e:  # noqa: BLE001 - stopping must never mask the interrupt
        log.warning(
            "could not ask the running runs of %s to stop (%s: %s); the next `scalelab run` resumes them",
            study,
            type(e).__name__,
            e,
        )


class DriverSession:
    """This driver's hold on one study: Ray connected, the driver lock held, the ledger open.
    Each `run` records (more of) the study's plan and dispatches it to its end."""

    def __init__(self, settings: tracking.Settings, ledger: Ledger, slots: int, address: str | None) -> None:
        self.settings, self.ledger, self.slots, self.address = settings, ledger, slots, address
        self.record: StudyRecord | None = None

    def check(self, cfg: StudyConfig) -> list[PlannedRun]:
        """The points of `cfg` (a grown study: the next adaptive round), memory-checked against
        the machine or the cluster."""
        from ..study.memory import check_memory, cluster_memory_bytes
        from .hostinfo import available_memory_bytes

        planned = expand(cfg)
        check_memory(cfg, planned, cluster_memory_bytes() if self.address else available_memory_bytes())
        return planned

    def run(
        self,
        cfg: StudyConfig,
        planned: list[PlannedRun],
        *,
        max_concurrent: int | None = None,
        show_progress: bool = True,
        reuse: bool = True,
    ) -> StudyOutcome:
        """Record the plan, dispatch it, close the parent run."""
        notes: list[str] = []
        if self.record is None:
            self.record = open_record(cfg, self.settings, self.ledger, notes)
        record = self.record
        add_points(cfg, self.settings, planned, self.ledger, record, reuse=reuse, notes=notes)
        self.ledger.for_study(cfg.study).request_cancel(None)
        limit = min(self.slots, max_concurrent) if max_concurrent else self.slots
        ids = (record.experiment_id, record.parent_run_id)
        try:
            with Progress(cfg.study, planned, enabled=show_progress) as progress:
                dispatcher = Dispatcher(cfg, self.settings, planned, self.ledger, limit=limit, mlflow_ids=ids)
                outcome = dispatcher.run(progress)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: running runs checkpoint first
            stop_running_runs(self.ledger, cfg.study)
            raise
        outcome.messages[:0] = notes
        outcome.experiment_id, outcome.parent_run_id = ids
        try:
            _close_parent(self.settings, record.parent_run_id, outcome)
        except Exception as e:  # noqa: BLE001 - the ledger holds the truth; a rerun closes it
            outcome.messages.append(
                f"could not update the parent MLflow run (store unreachable?): {type(e).__name__}: {str(e)[:300]}"
            )
        return outcome


@contextmanager
def driver_session(
    cfg: StudyConfig, settings: tracking.Settings, address: str | None, planned: list[PlannedRun]
) -> Iterator[DriverSession]:
    """Hold the study for the block: StudyBusy (before Ray starts) if a live driver holds it;
    Ray connected (an embedded one started and, at the end, stopped); resources and cluster
    memory checked; the driver lock held and renewed until the block ends."""
    refuse_if_held(cfg, settings)
    with ray_session(address):
        slots = check_resources(cfg)
        if address:  # the cluster's nodes, not this machine's RAM
            from ..study.memory import check_memory, cluster_memory_bytes

            check_memory(cfg, planned, cluster_memory_bytes())
        ledger = Ledger(settings.ledger_uri)
        try:
            with hold_study(ledger, cfg.study, cfg.source_path or "STUDY.yaml"):
                yield DriverSession(settings, ledger, slots, address)
        finally:
            ledger.dispose()


def run_study(
    cfg: StudyConfig,
    settings: tracking.Settings,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    show_progress: bool = True,
    reuse: bool = True,
) -> StudyOutcome:
    """Execute the study and block until it ends. Bad input raises StudyError before any write;
    so does a study another live driver holds (StudyBusy). `reuse`: copy points that other
    studies of the store finished instead of training them again."""
    planned = validate(cfg, settings, address)
    with driver_session(cfg, settings, address, planned) as session:
        return session.run(
            cfg, planned, max_concurrent=max_concurrent, show_progress=show_progress, reuse=reuse
        )


def _close_parent(settings: tracking.Settings, parent: str, outcome: StudyOutcome) -> None:
    c = tracking.client(settings.tracking_uri)
    counts: dict[str, int] = {}
    for s in outcome.states.values():
        counts[s] = counts.get(s, 0) + 1
    for state, n in counts.items():
        c.set_tag(parent, mc.runs_in_state_tag(state), str(n))
    c.set_terminated(parent, "FINISHED" if outcome.exit_code == EXIT_OK else "FAILED")
