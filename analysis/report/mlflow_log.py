"""The report on the study's MLflow parent run: its files as artifacts, the headline numbers as
metrics and params (keys documented in README; see analysis.answer.headline)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from trainer import mlflow_contract as mc


def log_report_to_mlflow(
    out_dir, experiment: str, tracking_uri: str | None = None, artifact_path: str = "report"
) -> str:
    """Log the report files on the study's parent run (tag scalelab.role=parent), and the
    headline numbers of headline.json as its metrics and params. Returns the run id."""
    from mlflow.tracking import MlflowClient

    from ..data import InputError, _experiment_id, search_all_runs

    client = MlflowClient(tracking_uri=tracking_uri)
    eid = _experiment_id(client, experiment)
    parents = search_all_runs(client, eid, mc.PARENT_FILTER)
    if not parents:
        raise InputError(f"experiment {experiment!r} has no parent run (tag scalelab.role=parent)")
    run = parents[0]
    head_file = Path(out_dir) / "headline.json"
    if head_file.exists():
        log_headline(client, run, json.loads(head_file.read_text(encoding="utf-8")))
    client.log_artifacts(run.info.run_id, str(out_dir), artifact_path=artifact_path)
    return run.info.run_id


def log_headline(client, run, head: dict) -> list[str]:
    """Metrics always (a rerun adds the new value); params only where not set before, since
    MLflow params are immutable: returns the keys whose param kept an older value."""
    from mlflow.entities import Metric, Param

    ts = int(time.time() * 1000)
    metrics = [
        Metric(k, float(v), ts, 0) for k, v in head.get("metrics", {}).items() if math.isfinite(float(v))
    ]
    old = run.data.params
    params = [Param(k, str(v)) for k, v in head.get("params", {}).items() if k not in old]
    stale = [k for k, v in head.get("params", {}).items() if k in old and old[k] != str(v)]
    for i in range(0, max(len(metrics), len(params)), 100):
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 100], params=params[i : i + 100])
    return stale
