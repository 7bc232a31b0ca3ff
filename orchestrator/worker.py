"""What a Ray task runs: one work item (a run, or every branch of one wsd trunk).

The worker writes only under its lease: progress and final state go to the ledger with a
conditional update, and metrics reach MLflow only while the lease holds, so an orphaned task of
a killed driver stops at its next checkpoint instead of writing over the attempt that replaced it.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict
from typing import Any, Mapping

from trainer import RunResult, RunSpec, train
from trainer.sinks import MlflowSink

from . import tracking
from .ledger import Ledger

# Exceptions that say "the code or the spec is wrong": retrying cannot help.
BUG_ERRORS = (TypeError, ValueError, IndexError, KeyError, AttributeError, AssertionError,
              NotImplementedError, ZeroDivisionError, SyntaxError, ImportError)


class Fenced(RuntimeError):
    """This attempt lost its lease: a newer attempt of the same run owns it now."""


class FencedSink:
    """Wraps a sink: every flush first checks the lease, then records progress in the ledger."""

    def __init__(self, inner, ledger: Ledger, run_key: str, lease: str):
        self.inner, self.ledger, self.run_key, self.lease = inner, ledger, run_key, lease
        self.run_id = getattr(inner, "run_id", None)     # recorded in checkpoints
        self._tokens = 0
        self._loss: float | None = None
        self._last_progress = 0.0

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.inner.log_params(params)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.inner.set_tags(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        self._tokens = max(self._tokens, int(step))
        loss = metrics.get("val_loss", metrics.get("train_loss"))
        if loss is not None:
            self._loss = float(loss)
        now = time.monotonic()
        if now - self._last_progress > 2.0:          # live progress for `scalelab run/status`
            self._last_progress = now
            self._progress()

    def log_text(self, text: str, artifact_file: str) -> None:
        self._check()
        self.inner.log_text(text, artifact_file)

    def flush(self) -> None:
        self._check()
        self.inner.flush()
        self._progress()

    def close(self) -> None:
        """Deliver what is still buffered (retrying while the store is briefly down)."""
        self._check()
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def _progress(self) -> None:
        if not self.ledger.update(self.run_key, lease=self.lease, tokens_done=self._tokens,
                                  last_loss=self._loss):
            raise Fenced(f"run {self.run_key}: lease lost (a newer attempt owns this run)")

    def _check(self) -> None:
        if not self.ledger.holds(self.run_key, self.lease):
            raise Fenced(f"run {self.run_key}: lease lost (a newer attempt owns this run)")


def _node_id() -> str:
    try:
        import ray
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return ""


def execute(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Run a work item. `item` is plain data (see scheduler._payload). Returns one outcome dict
    per run: {run_key, state, message, val_loss, ...}."""
    ledger = Ledger(item["ledger_uri"], create=False)
    client = tracking.client(item["tracking_uri"])
    study, node = item["study"], _node_id()
    num_threads = max(1, int(item["num_cpus"]))
    out = []
    trunk = item.get("trunk")
    trunk_sink = None
    if trunk:
        trunk_sink = FencedSink(MlflowSink(item["tracking_uri"], trunk["mlflow_run_id"], resume=True),
                                ledger, trunk["run_key"], trunk["lease"])
    try:
        for run in item["runs"]:
            row = ledger.get(run["run_key"])
            if row is not None and row.done:            # a wsd branch finished in an earlier attempt
                out.append({"run_key": run["run_key"], "state": row.state, "message": "already done"})
                continue
            out.append(_run_one(run, item, ledger, client, study, node, num_threads, trunk_sink))
            if out[-1]["state"] not in ("finished", "diverged"):
                break                                   # later branches need this one's trunk
        if trunk:
            final = "finished" if all(o["state"] in ("finished", "diverged") for o in out) else None
            if final:
                ledger.update(trunk["run_key"], lease=trunk["lease"], state="finished")
                tracking.finish_run(client, trunk["mlflow_run_id"], "finished")
    finally:
        ledger.dispose()
    return out


def _run_one(run: dict[str, Any], item: dict[str, Any], ledger: Ledger, client, study: str,
             node: str, num_threads: int, trunk_sink) -> dict[str, Any]:
    key, lease, run_id = run["run_key"], run["lease"], run["mlflow_run_id"]
    spec = RunSpec.from_dict(run["spec"])
    ledger.update(key, lease=lease, node_id=node)

    def should_stop() -> bool:
        return ledger.cancel_requested(study) == "now" or not ledger.holds(key, lease)

    sink = FencedSink(MlflowSink(item["tracking_uri"], run_id, resume=True), ledger, key, lease)
    sink.set_tags({"scalelab.node_id": node, "scalelab.attempt": str(run["attempt"])})
    t0 = time.time()
    try:
        result: RunResult = train(spec, sink, checkpoint_dir=run["checkpoint_dir"],
                                  trunk_dir=item.get("trunk_dir"), trunk_sink=trunk_sink,
                                  num_threads=num_threads, should_stop=should_stop)
        error_type = result.extra.get("error_type", "")
        if error_type == "Fenced":
            return {"run_key": key, "state": "fenced", "message": result.message}
        sink.close()
    except Fenced as e:
        return {"run_key": key, "state": "fenced", "message": str(e)}
    except Exception as e:                          # noqa: BLE001 - recorded, never lost
        result = RunResult(status="failed", message=traceback.format_exc(),
                           wall_time_s=time.time() - t0)
        error_type = type(e).__name__
    state = {"finished": "finished", "diverged": "diverged", "stopped": "killed"}.get(
        result.status, "failed")
    bug = state == "failed" and error_type in {t.__name__ for t in BUG_ERRORS}
    if state == "killed" and not ledger.holds(key, lease):
        return {"run_key": key, "state": "fenced", "message": "lease lost"}
    flops_per_s = result.flops / result.wall_time_s if result.wall_time_s > 0 else None
    values = dict(state=state, error=result.message or None, val_loss=result.val_loss,
                  wall_time_s=result.wall_time_s, flops_per_s=flops_per_s, device=result.device,
                  tokens_done=result.tokens)
    if not ledger.update(key, lease=lease, **values):
        return {"run_key": key, "state": "fenced", "message": "lease lost before the final write"}
    try:
        if state == "failed":
            client.set_tag(run_id, "scalelab.error", (result.message or "")[-4000:])
            client.log_text(run_id, result.message or "", "error/traceback.txt")
        if state != "failed":
            tracking.finish_run(client, run_id, state)
    except Exception:                               # the ledger holds the truth; MLflow catches up
        pass
    return {"run_key": key, "state": state, "message": result.message, "bug": bug,
            "val_loss": result.val_loss, "device": result.device, "node_id": node,
            "pid": os.getpid(), "result": asdict(result)}
