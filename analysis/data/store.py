"""Points and loss curves from a scalelab study in MLflow (docs/CONTRACTS.md layout)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from trainer import mlflow_contract as mc

from .points import CANONICAL, METRIC_UNITS, NUMERIC_PARAMS, InputError, Points

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- MLflow
def _client(tracking_uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise InputError(
            f"no MLflow experiment named {experiment!r} at this tracking URI "
            f"(check --experiment and --tracking-uri)"
        )
    return exp.experiment_id


def search_all_runs(client, experiment_id: str, filter_string: str = "", order_by=None):
    """Every run matching the filter, in pages of 50,000 (MLflow's maximum), with params, tags
    and latest metrics; `order_by` as for search_runs."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=50000,
            page_token=token,
            order_by=order_by,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def _sql_point_runs(tracking_uri: str, experiment_id: str):
    """Point runs read straight from an MLflow SQL store: [(run_id, status, params, tags,
    metrics)]. Four set-based queries instead of ORM objects per run: 10,000 runs load in about
    a second where search_runs takes ~20 s. Same selection as search_runs (active runs, tag
    scalelab.role = point; latest metric values, NaN kept)."""
    import sqlalchemy as sa

    eng = sa.create_engine(tracking_uri)
    eid = int(experiment_id)
    base = (
        "FROM {t} x JOIN runs r ON x.run_uuid = r.run_uuid "
        "WHERE r.experiment_id = :eid AND r.lifecycle_stage = 'active'"
    )
    try:
        with eng.connect() as con:

            def q(sql):
                return con.execute(sa.text(sql), {"eid": eid}).fetchall()

            runs = q(
                "SELECT r.run_uuid, r.status "
                + base.format(t="tags")
                + f" AND x.key = '{mc.ROLE}' AND x.value = '{mc.ROLE_POINT}'"
            )
            kv = {
                t: q(
                    f"SELECT x.run_uuid, x.key, x.value{', x.is_nan' if t == 'latest_metrics' else ''} "
                    + base.format(t=t)
                )
                for t in ("params", "tags", "latest_metrics")
            }
    finally:
        eng.dispose()
    out: dict[str, Any] = {rid: (rid, status, {}, {}, {}) for rid, status in runs}
    for slot, t in ((2, "params"), (3, "tags"), (4, "latest_metrics")):
        for row in kv[t]:
            rec = out.get(row[0])
            if rec is not None:
                val = float("nan") if t == "latest_metrics" and row[3] else row[2]
                rec[slot][row[1]] = float(val) if t == "latest_metrics" else val
    return list(out.values())


def _point_runs(client, tracking_uri, experiment_id):
    uri = tracking_uri
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    if str(uri).split(":", 1)[0].split("+", 1)[0] in _SQL_SCHEMES:
        try:
            return _sql_point_runs(uri, experiment_id)
        except Exception as e:  # noqa: BLE001 - schema drift or driver trouble: the API below works
            log.debug("direct SQL read of the store failed (%s); using the MLflow API", type(e).__name__)
    runs = search_all_runs(client, experiment_id, mc.POINT_FILTER)
    return [(r.info.run_id, r.info.status, r.data.params, r.data.tags, r.data.metrics) for r in runs]


def _verify_run_keys(client, experiment_id: str) -> dict[str, float]:
    """{run key: budget} of the runs `scalelab verify` planned (the parent run's
    `scalelab.verify.<C>` tags): they test the answer and are never fitted."""
    import json

    out: dict[str, float] = {}
    for parent in search_all_runs(client, experiment_id, mc.PARENT_FILTER):
        for k, v in parent.data.tags.items():
            if k.startswith(mc.VERIFY_PLAN):
                try:
                    plan = json.loads(v)
                    out.update(dict.fromkeys(plan.get("run_keys", []), float(plan["budget"])))
                except (ValueError, KeyError, TypeError):
                    log.debug("unreadable verify plan tag %s", k)
    return out


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _point_row(run, loss_metric: str, verify_keys: dict[str, float]) -> dict[str, Any]:
    """One point run as a row: numeric params, the loss, its outcome and provenance tags."""
    run_id, status, params, tags, metrics = run
    outcome = tags.get(mc.OUTCOME)
    if outcome is None:
        outcome = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(status, "unfinished")
    if status in ("RUNNING", "SCHEDULED") and outcome == "finished":
        outcome = "unfinished"
    row = {k: (_num(v) if k in NUMERIC_PARAMS else v) for k, v in params.items()}
    row["loss"] = metrics.get(loss_metric, np.nan)
    row.update({k: v for k, v in metrics.items() if k.startswith("val_loss_len")})
    row["run_id"] = run_id
    row["outcome"] = outcome
    row["run_key"] = tags.get(mc.RUN_KEY, row.get("run_key"))
    if mc.ROUND in tags:  # adaptive points (scalelab run --adaptive)
        row["round"] = _num(tags[mc.ROUND])
    if mc.ORIGIN in tags:  # adaptive | verify (scalelab verify: tests, never fitted)
        row["origin"] = tags[mc.ORIGIN]
    if mc.VERIFY_BUDGET in tags:
        row["verify_budget"] = _num(tags[mc.VERIFY_BUDGET])
    if row["run_key"] in verify_keys and "origin" not in row:  # finished before it was tagged
        row["origin"], row["verify_budget"] = mc.ORIGIN_VERIFY, verify_keys[row["run_key"]]
    if tags.get("mlflow.runName"):
        row["run_name"] = tags["mlflow.runName"]
    return row


def _points_frame(rows: list[dict[str, Any]], excluded: dict[str, int]) -> tuple[pd.DataFrame, float | None]:
    """The rows as a canonical frame (C = 6ND where no flops was logged; rows with a missing or
    invalid N, D, C or loss dropped and counted) and the study's true entropy, if one."""
    df = pd.DataFrame(rows)
    for col in ("n_params", "tokens", "flops"):
        if col not in df.columns:
            df[col] = np.nan
    if df["flops"].isna().any():
        df["flops"] = df["flops"].fillna(6.0 * df["n_params"] * df["tokens"])
    vals = df[["n_params", "tokens", "flops", "loss"]].to_numpy(float)
    bad = ~np.isfinite(vals).all(axis=1) | (vals <= 0).any(axis=1)
    if bad.any():
        excluded["missing/invalid n_params, tokens or loss"] = int(bad.sum())
        df = df[~bad].reset_index(drop=True)
    te = None
    if "true_entropy" in df.columns:
        v = pd.to_numeric(df["true_entropy"], errors="coerce").dropna().unique()
        if v.size == 1:
            te = float(v[0])
    return df[list(CANONICAL) + [c for c in df.columns if c not in CANONICAL]], te


def load_mlflow(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    include_failed: bool = False,
    loss_metric: str = "val_loss",
) -> Points:
    """Points from a scalelab study in MLflow (docs/CONTRACTS.md layout).

    From a SQL store, four set-based queries read params, tags and the LATEST value of every
    metric (no metric history); otherwise one batched search_runs in pages of 50,000. Child
    runs with tag scalelab.role=point are points; outcome from tag scalelab.outcome (else the
    run status). Runs not finished (diverged, failed, killed, still running) or without a final
    loss are excluded and counted. `loss_metric`: the metric fitted (val_bpb: bits per byte).
    """
    client = _client(tracking_uri)
    eid = _experiment_id(client, experiment)
    runs = _point_runs(client, tracking_uri, eid)
    verify_keys = _verify_run_keys(client, eid)
    rows: list[dict[str, Any]] = []
    excluded: dict[str, int] = {}
    for run in runs:
        row = _point_row(run, loss_metric, verify_keys)
        reason = row["outcome"] if row["outcome"] != "finished" and not include_failed else None
        if reason is None and not (isinstance(row["loss"], float) and np.isfinite(row["loss"])):
            reason = f"no final {loss_metric}"
        if reason is not None:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        rows.append(row)
    if not rows:
        raise InputError(
            f"experiment {experiment!r} has no finished point runs with a {loss_metric} "
            f"(runs seen: {len(runs)}, excluded: {excluded or 'none'})"
        )
    df, te = _points_frame(rows, excluded)
    return Points(
        df,
        source=f"mlflow:{experiment}",
        excluded=excluded,
        notes=[f"{len(runs)} point runs in experiment {experiment!r}; {len(rows)} used"],
        true_entropy=te,
        loss_unit=METRIC_UNITS.get(loss_metric, "nats/token"),
    )


def load_curves(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    metric: str = "val_loss",
    run_ids=None,
    include_failed: bool = False,
) -> pd.DataFrame:
    """Loss curves for Approach 1: columns run_id, n_params, tokens (the metric step = tokens
    seen), flops (6·N·tokens scaled by the run's own flops/tokens ratio when logged), loss.

    Histories come from the store's bulk query when it has one (SQL stores: one query per 100
    runs); otherwise from per-run queries in a small thread pool.
    """
    pts = load_mlflow(experiment, tracking_uri, include_failed=include_failed)
    df = pts.frame
    if run_ids is not None:
        df = df[df["run_id"].isin(set(run_ids))]
    client = _client(tracking_uri)
    ids = df["run_id"].tolist()
    recs = []
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is not None and hasattr(store, "get_metric_history_bulk"):
        for i in range(0, len(ids), 100):
            for m in store.get_metric_history_bulk(ids[i : i + 100], metric, max_results=10**8):
                recs.append((m.run_id, m.step, m.value))
    else:
        with ThreadPoolExecutor(8) as ex:
            for rid, hist in zip(ids, ex.map(lambda r: client.get_metric_history(r, metric), ids)):
                recs.extend((rid, m.step, m.value) for m in hist)
    cur = pd.DataFrame(recs, columns=["run_id", "tokens", "loss"])
    meta = df[["run_id", "n_params", "tokens", "flops"]].rename(
        columns={"tokens": "run_tokens", "flops": "run_flops"}
    )
    cur = cur.merge(meta, on="run_id", how="inner")
    cur = cur[cur["tokens"] > 0]
    cur["flops"] = cur["run_flops"] / cur["run_tokens"] * cur["tokens"]
    cur = cur.drop_duplicates(["run_id", "tokens"], keep="last")
    return (
        cur[["run_id", "n_params", "tokens", "flops", "loss"]]
        .sort_values(["run_id", "tokens"])
        .reset_index(drop=True)
    )
