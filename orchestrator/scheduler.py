"""Run a study on Ray: validate, record the plan, dispatch largest-first, retry, report.

Order of effects (so that bad input writes nothing): expand the grid and check every address
and the experiment name read-only; attach to / start Ray and check that some node can hold one
run; only then create the MLflow store, experiment, parent and child runs and the ledger rows,
and dispatch.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from . import bookkeeping, mlflow_view, tracking
from .config import StudyConfig, StudyError
from .driverlock import StudyBusy, busy_message, driver_alive, hold_study
from .grid import PlannedRun, WorkItem, expand, work_items
from .ledger import Ledger, LedgerRow, spec_json
from .messages import RunAssignment, RunReport, TrunkAssignment, WorkPayload
from .progress import Progress
from .states import RunState

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
log = logging.getLogger(__name__)


@dataclass
class StudyOutcome:
    exit_code: int
    states: dict[str, str] = field(default_factory=dict)  # run_key -> final state
    messages: list[str] = field(default_factory=list)
    experiment_id: str | None = None
    parent_run_id: str | None = None


# --------------------------------------------------------------------------- Ray connection


def check_address(address: str | None) -> None:
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        raise StudyError("--address", f"{address!r} is not HOST:PORT or ray://HOST:PORT")
    if not tracking.tcp_reachable(host or "127.0.0.1", int(port)):
        raise StudyError(
            "--address",
            f"no Ray cluster answers at {address}; start it "
            "(`ray start --head --port=...`) or fix --address/RAY_ADDRESS",
        )


# Ray binds its gRPC servers to the node IP, which on Linux is the machine's address; with
# "clusters" off the embedded Ray's node IP is 127.0.0.1 and every server listens on loopback.
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _init_with_retry(ray: Any, address: str, env: dict, attempts: int = 3) -> None:
    """ray.init, retrying (Ray Client only) the one transient failure seen: the proxier failing
    to start this driver's dedicated server (a psutil ZombieProcess race in
    proxier.start_specific_server), after which a new connection works."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level=logging.ERROR)
            return
        except ConnectionAbortedError as e:
            transient = address.startswith("ray://") and "Initialization failure from server" in str(e)
            if attempt == attempts or not transient:
                raise
            log.warning(
                "Ray Client server failed to start (attempt %d of %d); reconnecting", attempt, attempts
            )
            ray.shutdown()
            time.sleep(2.0 * attempt)


def connect_ray(address: str | None) -> bool:
    """Attach to a cluster, or start an embedded local Ray. Returns True if we connected.

    `HOST:PORT` (the head's GCS port) joins the cluster as a driver: this machine must be a node
    of it (Slurm, `ray job submit`, a test cluster). `ray://HOST:10001` uses Ray Client from
    anywhere that reaches the port. Token auth comes from the environment (`RAY_AUTH_TOKEN`,
    else ~/.ray/auth_token): a token alone implies `RAY_AUTH_MODE=token`. The embedded local Ray
    binds its GCS to a port the OS picks (port 0; never 6379, which a local Redis often holds)
    and, like everything scalelab starts, listens on 127.0.0.1 only (LOCAL_ONLY_ENV)."""
    if not address:
        # Environment, unavoidably: Ray reads this when it is first imported (no init argument
        # exists); setdefault keeps a user's choice.
        for k, v in LOCAL_ONLY_ENV.items():
            os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return False
    env = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if address:
        if os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_MODE"):
            os.environ["RAY_AUTH_MODE"] = "token"  # Ray reads auth only from the environment
        try:
            _init_with_retry(ray, address, env)
        except Exception as e:
            cause: BaseException | None = e
            while cause is not None and "auth" not in f"{type(cause).__name__} {cause}".lower():
                cause = cause.__cause__ or cause.__context__
            if cause is not None:  # ConnectionError from AuthenticationError
                raise StudyError(
                    "--address",
                    f"the Ray cluster at {address} refused the connection "
                    f"({type(cause).__name__}: {str(cause)[:200]}); export "
                    "the cluster's RAY_AUTH_MODE=token and RAY_AUTH_TOKEN",
                ) from None
            raise
        return True
    # "local": always a new instance, never the cluster a `ray start` on this machine recorded
    from .hostinfo import available_cpus  # affinity + cgroup quota, not os.cpu_count()

    ray.init(
        address="local",
        num_cpus=available_cpus(),
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024 * 1024,
        runtime_env=env,
        logging_level=logging.ERROR,
    )
    return True


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (a clean stop, not Ray's sys.exit and a C++ abort)."""


TERMINATED: list[int] = []  # signals received (Ray may re-raise ours as a KeyboardInterrupt)


def sigterm_as_interrupt() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():

        def handler(signum, frame):
            TERMINATED.append(signum)
            raise Terminated()

        signal.signal(signal.SIGTERM, handler)


STOP_GRACE_S = 20.0


def stop_running_runs(ledger: Ledger, study: str, grace_s: float = STOP_GRACE_S) -> None:
    """Ask running runs to checkpoint and stop (as `cancel --now`), wait up to grace_s for them,
    then leave: the next `scalelab run` clears the request and resumes from the checkpoints."""
    import time

    try:
        ledger.request_cancel(study, "now")
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(r.state == RunState.RUNNING for r in ledger.rows(study)):
            time.sleep(0.5)
    except Exception as e:  # noqa: BLE001 - stopping must never mask the interrupt
        log.warning(
            "could not ask the running runs of %s to stop (%s: %s); the next `scalelab run` resumes them",
            study,
            type(e).__name__,
            e,
        )


def check_resources(cfg: StudyConfig) -> int:
    """Fail fast if no alive node can hold one run; return how many runs fit at once."""
    import ray

    need_cpu, need_gpu = cfg.resources.num_cpus, cfg.resources.num_gpus
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    best_cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    best_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    if not any(
        n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("GPU", 0) >= need_gpu for n in nodes
    ):
        key = "resources.num_gpus" if need_gpu > best_gpu else "resources.num_cpus"
        raise StudyError(
            key,
            f"no node can hold one run (asks {need_cpu:g} CPU, {need_gpu:g} GPU; "
            f"the largest node has {best_cpu:g} CPU, {best_gpu:g} GPU); lower the "
            "request or add a node that has it",
        )
    slots = 0
    for n in nodes:
        r = n["Resources"]
        fit = int(r.get("CPU", 0) // need_cpu) if need_cpu else 10**6
        if need_gpu:
            fit = min(fit, int(r.get("GPU", 0) // need_gpu))
        slots += fit
    return max(1, slots)


# --------------------------------------------------------------------------- planning


def validate(cfg: StudyConfig, settings: tracking.Settings, address: str | None) -> list[PlannedRun]:
    """Everything that can be checked without writing anything. Raises StudyError."""
    planned = expand(cfg)
    from .hostinfo import available_memory_bytes
    from .memory import check_memory

    check_memory(cfg, planned, None if address else available_memory_bytes())
    from .corpus_plan import check_epochs

    check_epochs(cfg, planned)
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


def _legacy_fingerprints(cfg: StudyConfig, settings: tracking.Settings) -> tuple[str, ...]:
    """Read-only: the study's fingerprints under the older scheme (see bookkeeping)."""
    import sqlalchemy as sa

    if not tracking.store_exists(settings.ledger_uri):
        return bookkeeping.legacy_fingerprints(cfg, None)
    try:
        ledger = Ledger(settings.ledger_uri, create=False)
    except ImportError:  # no driver for this URI: reported where it is used
        return bookkeeping.legacy_fingerprints(cfg, None)
    try:
        return bookkeeping.legacy_fingerprints(cfg, ledger)
    except sa.exc.SQLAlchemyError:  # no ledger tables yet: only this file's settings
        return bookkeeping.legacy_fingerprints(cfg, None)
    finally:
        ledger.dispose()


def record_plan(
    cfg: StudyConfig,
    settings: tracking.Settings,
    planned: list[PlannedRun],
    ledger: Ledger,
    *,
    reuse: bool = True,
    messages: list[str] | None = None,
) -> tuple[str, str]:
    """Create the store, experiment and parent run; reconcile the ledger with MLflow (legacy
    keys, lost runs, adoptable results, reuse from other studies); insert the study's ledger rows
    and a child run per point still to train (and per wsd trunk); idempotent.
    Returns (experiment_id, parent_run_id)."""
    notes = messages if messages is not None else []
    fp = tracking.fingerprint_hash(cfg.fingerprint())
    c = tracking.client(settings.tracking_uri)
    exp_id = tracking.ensure_experiment(c, cfg.study, fp, settings.artifact_root)
    mlflow_view.ensure_view(c, exp_id)
    parent = tracking.ensure_parent_run(c, exp_id, cfg.study, cfg.description)
    ledger.upsert_study(cfg.study, fingerprint=fp, experiment_id=exp_id, parent_run_id=parent)
    bookkeeping.migrate_legacy_keys(ledger, c)
    runs = tracking.child_runs(c, exp_id)
    lost = bookkeeping.forget_lost_runs(ledger, cfg.study, {r.info.run_id for r in runs})
    if lost:
        notes.append(
            f"{len(lost)} run(s) recorded in the ledger are missing from the MLflow store "
            "(lost or deleted): re-logging them from their checkpoints, else retraining"
        )
    ledger.ensure(cfg.study, _plan_rows(cfg, settings, planned))
    adopted = bookkeeping.adopt_children(ledger, cfg.study, tracking.children_by_key(runs))
    if adopted:
        notes.append(f"{len(adopted)} run(s) adopted as results from the MLflow store")
    if reuse:
        reused = bookkeeping.reuse_finished(c, ledger, cfg.study, exp_id, parent, planned)
        if reused:
            notes.append(
                f"{len(reused)} point(s) reused from other studies of this store "
                "(tagged scalelab.reused_from; `--no-reuse` retrains them)"
            )
    return exp_id, parent


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


def adopt_child_runs(c, exp_id: str, ledger: Ledger, study: str) -> None:
    """Child runs a crashed driver created but did not record in the ledger are adopted (by
    their run_key tag), never duplicated."""
    bookkeeping.adopt_children(ledger, study, tracking.children_by_key(tracking.child_runs(c, exp_id)))


def ensure_child_runs(
    cfg: StudyConfig, settings: tracking.Settings, item: WorkItem, ledger: Ledger, exp_id: str, parent: str
) -> None:
    """Create the MLflow runs of a work item (its points, its wsd trunk) as it is dispatched:
    a run's Duration is then its own training time, and a queued point is no RUNNING run.
    Only the driver creates runs; the ledger records each id at once (adopted after a crash)."""
    rows = {r.run_key: r for r in ledger.rows(cfg.study)}
    todo = [p for p in item.runs if not rows[p.key].mlflow_run_id and not rows[p.key].done]
    trunk_key = item.trunk_key if item.trunk_key and not rows[item.trunk_key].mlflow_run_id else None
    if not todo and not trunk_key:
        return
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
            "trunk",
            {"run_key": trunk_key, "n_params": p.n_params, "schedule": "wsd"},
        )
        ledger.update(cfg.study, trunk_key, mlflow_run_id=run_id)
    for p in todo:
        params = p.mlflow_params()  # the trainer adds its own (true_entropy, ...)
        run_id = tracking.create_child_run(
            c,
            exp_id,
            parent,
            cfg.study,
            p.key,
            bookkeeping.point_run_name(p),
            "point",
            params,
            {"scalelab.label": p.label, "scalelab.experts": str(p.spec.model.experts)},
            metrics={k: getattr(p, k) for k in tracking.POINT_METRICS},
        )
        ledger.update(cfg.study, p.key, mlflow_run_id=run_id)


def _create_runs(
    cfg: StudyConfig, settings: tracking.Settings, item: WorkItem, ledger: Ledger, mlflow_ids: tuple[str, str]
) -> None:
    """ensure_child_runs, retried while the store is briefly unreachable."""
    tracking.retry_store(
        lambda: ensure_child_runs(cfg, settings, item, ledger, *mlflow_ids),
        tracking_timeout_s(),
        lambda: adopt_child_runs(tracking.client(settings.tracking_uri), mlflow_ids[0], ledger, cfg.study),
    )


# --------------------------------------------------------------------------- dispatch


def _payload(
    item: WorkItem, cfg: StudyConfig, settings: tracking.Settings, ledger: Ledger, rows: dict[str, LedgerRow]
) -> WorkPayload:
    """The work item as the worker receives it: a fresh lease per run not yet done (and for
    its wsd trunk), with the MLflow run ids ensure_child_runs recorded."""
    runs = []
    for p in item.runs:
        row = rows[p.key]
        if row.done:
            continue
        runs.append(
            RunAssignment(
                run_key=p.key,
                spec=p.spec.to_dict(),
                lease=ledger.acquire(cfg.study, p.key),
                mlflow_run_id=_mlflow_id(row),
                attempt=row.attempts + 1,
                checkpoint_dir=_checkpoint_dir(row),
            )
        )
    trunk, trunk_dir = None, None
    if item.trunk_key:
        t = rows[item.trunk_key]
        trunk = TrunkAssignment(
            run_key=t.run_key, lease=ledger.acquire(cfg.study, t.run_key), mlflow_run_id=_mlflow_id(t)
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


def tracking_timeout_s() -> float:
    """SCALELAB_TRACKING_TIMEOUT_S (default 60): how long creating runs at dispatch, and a
    run's end, wait for an unreachable MLflow store before failing."""
    return float(os.environ.get("SCALELAB_TRACKING_TIMEOUT_S", 60))


def _checkpoint_dir(row: LedgerRow) -> str:
    if not row.checkpoint_dir:  # record_plan writes it with the row
        raise RuntimeError(f"run {row.run_key} has no checkpoint directory in the ledger")
    return row.checkpoint_dir


def _mlflow_id(row: LedgerRow) -> str:
    if not row.mlflow_run_id:  # ensure_child_runs records it before dispatch
        raise RuntimeError(f"run {row.run_key} has no MLflow run at dispatch")
    return row.mlflow_run_id


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
    refuse_if_held(cfg, settings)
    started = connect_ray(address)
    sigterm_as_interrupt()  # after ray.init, which installs sys.exit on SIGTERM
    try:
        import ray

        slots = check_resources(cfg)
        if address:  # the cluster's nodes, not this machine's RAM
            from .memory import check_memory, cluster_memory_bytes

            check_memory(cfg, planned, cluster_memory_bytes())
        ledger = Ledger(settings.ledger_uri)
        try:
            with hold_study(ledger, cfg.study, cfg.source_path or "STUDY.yaml"):
                return _run_held(cfg, settings, planned, ledger, slots, max_concurrent, show_progress, reuse)
        finally:
            ledger.dispose()
    finally:
        if started:
            ray.shutdown()


def refuse_if_held(cfg: StudyConfig, settings: tracking.Settings) -> None:
    """Read-only early check (before Ray starts): StudyBusy if a live driver holds the study."""
    import sqlalchemy as sa

    if not tracking.store_exists(settings.ledger_uri):
        return
    try:
        ledger = Ledger(settings.ledger_uri, create=False)
    except ImportError:  # no driver for this URI: reported where it is used
        return
    try:
        holder = ledger.study(cfg.study)
    except sa.exc.SQLAlchemyError:  # no ledger tables yet (or an older schema)
        return
    finally:
        ledger.dispose()
    if holder is not None and driver_alive(holder):
        raise StudyBusy("study", busy_message(cfg.study, holder, cfg.source_path or "STUDY.yaml"))


def _run_held(
    cfg: StudyConfig,
    settings: tracking.Settings,
    planned: list[PlannedRun],
    ledger: Ledger,
    slots: int,
    max_concurrent: int | None,
    show_progress: bool,
    reuse: bool,
) -> StudyOutcome:
    """The study once this driver holds it: record the plan, dispatch, close the parent run."""
    notes: list[str] = []
    exp_id, parent = record_plan(cfg, settings, planned, ledger, reuse=reuse, messages=notes)
    ledger.request_cancel(cfg.study, None)
    try:
        outcome = _dispatch(
            cfg, settings, planned, ledger, slots, max_concurrent, show_progress, (exp_id, parent)
        )
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: running runs checkpoint first
        stop_running_runs(ledger, cfg.study)
        raise
    outcome.messages[:0] = notes
    outcome.experiment_id, outcome.parent_run_id = exp_id, parent
    try:
        _close_parent(settings, parent, outcome)
    except Exception as e:  # noqa: BLE001 - the ledger holds the truth; a rerun closes it
        outcome.messages.append(
            f"could not update the parent MLflow run (store unreachable?): {type(e).__name__}: {str(e)[:300]}"
        )
    return outcome


def _close_parent(settings: tracking.Settings, parent: str, outcome: StudyOutcome) -> None:
    c = tracking.client(settings.tracking_uri)
    counts: dict[str, int] = {}
    for s in outcome.states.values():
        counts[s] = counts.get(s, 0) + 1
    for state, n in counts.items():
        c.set_tag(parent, f"scalelab.runs_{state}", str(n))
    c.set_terminated(parent, "FINISHED" if outcome.exit_code == EXIT_OK else "FAILED")


def _dispatch(
    cfg: StudyConfig,
    settings: tracking.Settings,
    planned: list[PlannedRun],
    ledger: Ledger,
    slots: int,
    max_concurrent: int | None,
    show_progress: bool,
    mlflow_ids: tuple[str, str],
) -> StudyOutcome:
    import ray
    from ray.exceptions import RayError

    from .worker import execute

    remote = ray.remote(execute).options(
        num_cpus=cfg.resources.num_cpus, num_gpus=cfg.resources.num_gpus, max_retries=0
    )
    limit = min(slots, max_concurrent) if max_concurrent else slots
    rows = {r.run_key: r for r in ledger.rows(cfg.study)}
    queue = [w for w in work_items(planned) if not all(rows[p.key].done for p in w.runs)]
    retries: dict[str, int] = {}  # per work item (its first run key), this invocation
    in_flight: dict[Any, WorkItem] = {}
    messages: list[str] = []
    cancelled = False

    with Progress(cfg.study, planned, enabled=show_progress) as progress:
        while queue or in_flight:
            cancel = ledger.cancel_requested(cfg.study)
            if cancel and not cancelled:
                cancelled = True
                messages.append(f"cancel requested ({cancel}): starting no new runs")
            while queue and not cancelled and len(in_flight) < limit:
                item = queue.pop(0)
                _create_runs(cfg, settings, item, ledger, mlflow_ids)
                rows = {r.run_key: r for r in ledger.rows(cfg.study)}
                ref = remote.remote(_payload(item, cfg, settings, ledger, rows))
                in_flight[ref] = item
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                item = in_flight.pop(ref)
                item_id = item.runs[0].key
                try:
                    results = ray.get(ref)
                    retry, why = _handle_results(results, cfg.study, ledger, settings)
                    if any(r.storage for r in results) and not cancelled:
                        cancelled = True  # every later run would fail the same way
                        messages.append(
                            "checkpoint storage unusable: starting no new runs: " + why.splitlines()[0][:300]
                        )
                except RayError as e:  # worker or node died: retry from checkpoint
                    retry, why = True, f"{type(e).__name__}: {e}"[-3000:]
                if retry and not cancelled:
                    n = retries.get(item_id, 0)
                    if n < cfg.resources.max_retries:
                        retries[item_id] = n + 1
                        messages.append(
                            f"retrying {item.runs[0].label} ({n + 1}/"
                            f"{cfg.resources.max_retries}): {why.splitlines()[-1][:200]}"
                        )
                        queue.insert(0, item)
                        continue
                    for p in item.runs:
                        if not rows_done(ledger, cfg.study, p.key):
                            _mark_failed(ledger, settings, cfg.study, p.key, why)
            progress.update({r.run_key: r for r in ledger.rows(cfg.study)})
        final_rows = {r.run_key: r for r in ledger.rows(cfg.study)}
        progress.update(final_rows)

    return _outcome(cfg, settings, planned, ledger, final_rows, cancelled, messages)


def _outcome(
    cfg: StudyConfig,
    settings: tracking.Settings,
    planned: list[PlannedRun],
    ledger: Ledger,
    final_rows: dict[str, LedgerRow],
    cancelled: bool,
    messages: list[str],
) -> StudyOutcome:
    """The study's end: runs stopped by `cancel --now` marked killed, what did not finish
    reported, and the exit code."""
    if cancelled and ledger.cancel_requested(cfg.study) == "now":
        _mark_killed(ledger, settings, cfg.study, planned, final_rows)
        final_rows = {r.run_key: r for r in ledger.rows(cfg.study)}
    states = {p.key: final_rows[p.key].state for p in planned}
    for p in planned:  # results that are not plain successes, reported
        r = final_rows[p.key]
        if r.state != RunState.FINISHED:
            last = (r.error or "").strip().splitlines()[-1:] or [""]
            messages.append(f"{p.label} D={p.tokens:.3g} ({p.key}): {r.state} {last[0][:200]}")
    if any(s == RunState.FAILED for s in states.values()):
        code = EXIT_FAILED
    elif all(RunState(s).is_result for s in states.values()):
        code = EXIT_OK
    else:
        code = EXIT_FAILED  # cancelled or killed before the end
    return StudyOutcome(exit_code=code, states=states, messages=messages)


def rows_done(ledger: Ledger, study: str, key: str) -> bool:
    r = ledger.get(study, key)
    return r is not None and r.done


def _handle_results(
    results: list[RunReport],
    study: str,
    ledger: Ledger,
    settings: tracking.Settings,
) -> tuple[bool, str]:
    """Returns (retry?, reason). Bug-class failures and divergence are never retried."""
    for r in results:
        if r.state is RunState.FAILED:
            if r.bug or r.storage:
                _finish_mlflow(ledger, settings, study, r.run_key, RunState.FAILED)
                return False, r.message
            return True, r.message or "failed"
        if r.state is RunState.FENCED:
            return False, r.message
    return False, ""


def _finish_mlflow(
    ledger: Ledger, settings: tracking.Settings, study: str, key: str, outcome: RunState
) -> None:
    """End a run's MLflow run with `outcome`; best effort (the ledger holds the state)."""
    row = ledger.get(study, key)
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


def _mark_failed(ledger: Ledger, settings: tracking.Settings, study: str, key: str, why: str) -> None:
    ledger.update(study, key, state=RunState.FAILED, error=why)
    _finish_mlflow(ledger, settings, study, key, RunState.FAILED)


def _mark_killed(
    ledger: Ledger,
    settings: tracking.Settings,
    study: str,
    planned: list[PlannedRun],
    rows: dict[str, LedgerRow],
) -> None:
    for p in planned:
        r = rows[p.key]
        if r.state in (RunState.RUNNING, RunState.KILLED):
            ledger.update(study, p.key, state=RunState.KILLED)
            _finish_mlflow(ledger, settings, study, p.key, RunState.KILLED)
