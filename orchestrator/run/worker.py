"""What a Ray task runs: one work item (a run, or every branch of one wsd trunk).

The worker writes only under its lease: progress and final state go to the ledger with a
conditional update, and metrics reach MLflow only while the lease holds, so an orphaned task of
a killed driver stops at its next checkpoint instead of writing over the attempt that replaced it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
import traceback
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from trainer import RunError, RunResult, RunSpec, train
from trainer import mlflow_contract as mc
from trainer.redact import redact_text
from trainer.sinks import MetricSink, MlflowSink
from trainer.spec import ALREADY_FINISHED

from ..store import tracking
from ..store.ledger import AttemptEnd, Ledger
from ..store.mlflow_view import log10_metrics
from ..store.states import RunState
from .messages import RunAssignment, RunReport, WorkPayload

log = logging.getLogger(__name__)

# Exceptions that say "the code or the spec is wrong": retrying cannot help.
BUG_ERRORS = (
    TypeError,
    ValueError,
    IndexError,
    KeyError,
    AttributeError,
    AssertionError,
    NotImplementedError,
    ZeroDivisionError,
    SyntaxError,
    ImportError,
)


# OSErrors that say "the checkpoint storage is unusable" (full, read-only, not a directory):
# retrying cannot help and every later run would fail the same way, so the study stops.
STORAGE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
}
# torch reports shape errors as RuntimeError: deterministic, so bug-class too.
SHAPE_ERROR = re.compile(
    r"size mismatch|shape .* is invalid|must match the size|"
    r"mat\d and mat\d shapes cannot be multiplied|dimension out of range"
)
TRACKING_TIMEOUT_S = 60.0  # how long a run's end waits for an unreachable MLflow store


def is_bug(error: BaseException | None, message: str = "") -> bool:
    """Bug-class failures (the code or the spec is wrong, so a retry cannot help), by type:
    subclasses count (a SpecError is a ValueError), and torch's shape RuntimeErrors."""
    if isinstance(error, BUG_ERRORS):
        return True
    return isinstance(error, RuntimeError) and bool(SHAPE_ERROR.search(f"{error}\n{message}"))


def _relog_final(client, run_id: str, result: RunResult, timeout_s: float) -> None:
    """A run found finished in its checkpoint whose MLflow run lacks the result (the store was
    lost): log the final losses at step = tokens, so the point is complete again."""
    from mlflow.entities import Metric

    if mc.VAL_LOSS in tracking.retry_store(lambda: client.get_run(run_id), timeout_s).data.metrics:
        return
    now = int(time.time() * 1000)
    final = {
        k: v for k, v in ((mc.VAL_LOSS, result.val_loss), (mc.TRAIN_LOSS, result.train_loss)) if v is not None
    }
    final.update(log10_metrics(final))
    metrics = [Metric(k, float(v), now, int(result.tokens)) for k, v in final.items()]
    tracking.retry_store(lambda: client.log_batch(run_id, metrics=metrics), timeout_s)
    tracking.retry_store(lambda: client.set_tag(run_id, mc.RELOGGED_FROM_CHECKPOINT, "true"), timeout_s)


class Fenced(RuntimeError):
    """This attempt lost its lease: a newer attempt of the same run owns it now."""


class FencedSink:
    """Wraps a sink: every flush first checks the lease, then records progress in the ledger."""

    def __init__(
        self,
        inner: MetricSink,
        ledger: Ledger,
        study: str,
        run_key: str,
        lease: str,
        close_timeout_s: float = TRACKING_TIMEOUT_S,
    ) -> None:
        self.inner, self.run_key, self.lease = inner, run_key, lease
        self.ledger = ledger.for_study(study)
        self.close_timeout_s = close_timeout_s
        self._tokens = 0
        self._loss: float | None = None
        self._last_progress = 0.0

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.inner.log_params(params)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.inner.set_tags(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if "val_loss" in metrics:  # the view's log-log scatters plot log10_val_loss
            metrics = {**metrics, **log10_metrics({"val_loss": metrics["val_loss"]})}
        self.inner.log_metrics(metrics, step)
        self._tokens = max(self._tokens, int(step))
        loss = metrics.get("val_loss", metrics.get("train_loss"))
        if loss is not None:
            self._loss = float(loss)
        now = time.monotonic()
        if now - self._last_progress > 2.0:  # live progress for `scalelab run/status`
            self._last_progress = now
            self._progress()

    def log_text(self, text: str, artifact_file: str) -> None:
        self._check()
        self.inner.log_text(text, artifact_file)

    def flush(self) -> None:
        self._check()
        self.inner.flush()
        self._progress()

    @property
    def run_id(self) -> str | None:
        """The inner sink's MLflow run id (recorded in checkpoints)."""
        return self.inner.run_id

    @property
    def pending(self) -> int:
        """Items logged but not yet delivered to the store (the trainer does not checkpoint
        over undelivered metrics)."""
        return self.inner.pending

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what is still buffered (retrying while the store is briefly down); raises
        MlflowSinkError after `timeout_s` (default `close_timeout_s`)."""
        self._check()
        self.inner.close(timeout_s=self.close_timeout_s if timeout_s is None else timeout_s)

    def _progress(self) -> None:
        if not self.ledger.progress(self.run_key, self.lease, tokens_done=self._tokens, last_loss=self._loss):
            raise Fenced(f"run {self.run_key}: lease lost (a newer attempt owns this run)")

    def _check(self) -> None:
        if not self.ledger.holds(self.run_key, self.lease):
            raise Fenced(f"run {self.run_key}: lease lost (a newer attempt owns this run)")


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception as e:  # noqa: BLE001 - outside Ray (tests, in-process)
        log.debug("no Ray node id (%s: %s)", type(e).__name__, e)
        return ""


def node_local(item: WorkPayload) -> WorkPayload:
    """The driver's locations, overridden by this node's SCALELAB_NODE_TRACKING_URI,
    SCALELAB_NODE_LEDGER_URI and SCALELAB_NODE_CHECKPOINT_DIR when set (e.g. in docker the
    driver on the host sees http://127.0.0.1:5000 where nodes reach http://mlflow:5000).
    Checkpoint dirs are rebased: the same layout (tracking.checkpoint_path) under the node's root."""
    env = os.environ
    item = replace(
        item,
        tracking_uri=env.get("SCALELAB_NODE_TRACKING_URI") or item.tracking_uri,
        ledger_uri=env.get("SCALELAB_NODE_LEDGER_URI") or item.ledger_uri,
    )
    root = env.get("SCALELAB_NODE_CHECKPOINT_DIR")
    if root:
        study = item.study
        runs = tuple(
            replace(r, checkpoint_dir=tracking.checkpoint_path(root, study, r.run_key)) for r in item.runs
        )
        trunk_dir = tracking.trunk_path(root, study, item.trunk.run_key) if item.trunk else item.trunk_dir
        item = replace(item, runs=runs, trunk_dir=trunk_dir)
    return item


def _quiet_mlflow_retries() -> None:
    """The sink retries on its own (backoff, bounded buffer): one HTTP request must not block
    training for minutes while an MLflow server is down (MLflow's default is 7 retries).
    Environment, because MLflow reads these only from there; setdefault keeps a user's choice,
    and this runs in the Ray worker process (never the user's shell)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def execute(item: WorkPayload) -> list[RunReport]:
    """Run a work item (built by scheduler._payload). Returns one report per run, in order;
    stops after the first run that is not a result (later branches need its trunk)."""
    item = node_local(item)
    _quiet_mlflow_retries()
    ledger = Ledger(item.ledger_uri, create=False)
    client = tracking.client(item.tracking_uri)
    study, node = item.study, _node_id()
    num_threads = max(1, int(item.num_cpus))
    out: list[RunReport] = []
    trunk = item.trunk
    trunk_sink = None
    if trunk:
        trunk_sink = FencedSink(
            MlflowSink(item.tracking_uri, trunk.mlflow_run_id, resume=True),
            ledger,
            study,
            trunk.run_key,
            trunk.lease,
        )
    try:
        for run in item.runs:
            row = ledger.get(study, run.run_key)
            if row is not None and row.done:  # a wsd branch finished in an earlier attempt
                out.append(RunReport(run.run_key, row.state, "already done"))
                continue
            out.append(_run_one(run, item, ledger, client, node, num_threads, trunk_sink))
            if not out[-1].ok:
                break  # later branches need this one's trunk
        if trunk and all(o.ok for o in out):
            ledger.for_study(study).finish(trunk.run_key, lease=trunk.lease)
            tracking.retry_store(
                lambda: tracking.finish_run(client, trunk.mlflow_run_id, RunState.FINISHED),
                item.tracking_timeout_s,
            )
    finally:
        ledger.dispose()
    return out


def clear_stale_error(client: Any, run_id: str) -> None:
    """A run that succeeded after a failed attempt keeps no `scalelab.error` tag."""
    if mc.ERROR in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, mc.ERROR)


def _run_one(
    run: RunAssignment,
    item: WorkPayload,
    ledger: Ledger,
    client: Any,
    node: str,
    num_threads: int,
    trunk_sink: FencedSink | None,
) -> RunReport:
    """Train one run under its lease, then record its final state (ledger first, then MLflow)."""
    key, lease, study = run.run_key, run.lease, item.study
    sl = ledger.for_study(study)
    spec = RunSpec.from_dict(run.spec)
    sl.record_worker(key, lease, node_id=node, pid=os.getpid())

    def should_stop() -> bool:
        return sl.cancel_requested() == "now" or not sl.holds(key, lease)

    sink = FencedSink(
        MlflowSink(item.tracking_uri, run.mlflow_run_id, resume=True),
        ledger,
        study,
        key,
        lease,
        close_timeout_s=item.tracking_timeout_s,
    )
    sink.set_tags({mc.NODE_ID: node, mc.ATTEMPT: str(run.attempt)})
    t0 = time.time()
    try:
        result: RunResult = train(
            spec,
            sink,
            checkpoint_dir=run.checkpoint_dir,
            trunk_dir=item.trunk_dir,
            trunk_sink=trunk_sink,
            num_threads=num_threads,
            should_stop=should_stop,
        )
        if result.error is not None and isinstance(result.error.exception, Fenced):
            return RunReport(key, RunState.FENCED, result.message)
        sink.close()
    except Fenced as e:
        return RunReport(key, RunState.FENCED, str(e))
    except Exception as e:  # noqa: BLE001 - recorded, never lost
        result = RunResult(status="failed", message=traceback.format_exc(), wall_time_s=time.time() - t0)
        result.error = RunError.of(e)
    return _record(run, item, ledger, client, node, result)


def _classify(result: RunResult, checkpoint_dir: str) -> tuple[RunState, bool, bool]:
    """(state, bug?, storage?) of a trained run; a storage failure's message says so."""
    state = RunState.from_trainer(result.status)
    error = result.error
    bug = state is RunState.FAILED and is_bug(error.exception if error else None, result.message or "")
    errno_ = error.errno if error else None
    storage = state is RunState.FAILED and errno_ in STORAGE_ERRNOS
    if storage:
        assert errno_ is not None
        result.message = (
            f"checkpoint storage unusable ({errno.errorcode.get(errno_, '')}: "
            f"{os.strerror(errno_)}) under {checkpoint_dir}\n"
            f"{result.message}"
        )
    return state, bug, storage


def _record(
    run: RunAssignment, item: WorkPayload, ledger: Ledger, client: Any, node: str, result: RunResult
) -> RunReport:
    """A trained (or failed) run's final state: classified, written to the ledger under the
    lease, then to MLflow (best effort: the ledger holds the truth)."""
    key, lease, run_id = run.run_key, run.lease, run.mlflow_run_id
    sl = ledger.for_study(item.study)
    state, bug, storage = _classify(result, run.checkpoint_dir)
    if state is RunState.FINISHED and result.message == ALREADY_FINISHED:
        result.message = ""  # a result, not an error; re-log if lost
        _relog_final(client, run_id, result, item.tracking_timeout_s)
    result.message = redact_text(result.message or "")  # driver errors may carry store URIs
    if state is RunState.KILLED and not sl.holds(key, lease):
        return RunReport(key, RunState.FENCED, "lease lost")
    end = AttemptEnd(
        error=result.message or None,
        val_loss=result.val_loss,
        wall_time_s=result.wall_time_s,
        flops_per_s=result.flops / result.wall_time_s if result.wall_time_s > 0 else None,
        device=result.device,
        tokens_done=result.tokens,
    )
    if not sl.end_attempt(key, state, lease, end):
        return RunReport(key, RunState.FENCED, "lease lost before the final write")
    _record_mlflow(client, run_id, state, result.message, item.tracking_timeout_s)
    return RunReport(
        key,
        state,
        result.message,
        bug=bug,
        storage=storage,
        val_loss=result.val_loss,
        device=result.device,
        node_id=node,
        pid=os.getpid(),
        result=result.to_dict(),
    )


def _record_mlflow(client: Any, run_id: str, state: RunState, message: str, timeout_s: float) -> None:
    """End the MLflow run (a failure keeps it open with its traceback: the driver retries or
    ends it). Best effort: the ledger holds the truth and a rerun catches MLflow up."""
    try:
        if state is RunState.FAILED:
            tracking.retry_store(lambda: client.set_tag(run_id, mc.ERROR, message[-4000:]), timeout_s)
            tracking.retry_store(lambda: client.log_text(run_id, message, "error/traceback.txt"), timeout_s)
        else:
            tracking.retry_store(lambda: tracking.finish_run(client, run_id, state), timeout_s)
            tracking.retry_store(lambda: clear_stale_error(client, run_id), timeout_s)
    except Exception as e:  # noqa: BLE001 - any store error, logged
        log.warning(
            "run %s: MLflow not updated (%s: %s); the ledger holds the state and a rerun catches MLflow up",
            run_id,
            type(e).__name__,
            str(e)[:300],
        )
