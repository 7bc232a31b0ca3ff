"""Loading a large study from MLflow: `load_mlflow` (direct SQL read) vs `search_runs`.

Run: .venv/bin/python benchmarks/mlflow_load.py [--runs 10000] [--db /tmp/scalelab_load.db]

Builds (once, cached at --db) a SQLite MLflow store whose experiment holds `--runs` point runs
laid out as scalelab writes them (tags scalelab.role/outcome/run_key, ~10 params, a val_loss
metric): the first 200 runs through MLflow's own client, the rest copied from those in SQL with
new run ids (creating 10,000 runs through the API takes minutes). Then times, in this process,
load_mlflow (set-based SQL queries) against the paged search_runs path, and checks both give
the same points.
"""

import argparse
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.data import _client, _experiment_id, load_mlflow, search_all_runs

SEED_RUNS = 200


def _seed(uri):
    import mlflow
    from mlflow.entities import Metric, Param

    c = mlflow.tracking.MlflowClient(tracking_uri=uri)
    eid = c.create_experiment("load_bench")
    rng = np.random.default_rng(0)
    for i in range(SEED_RUNS):
        N, D = float(10 ** rng.uniform(6, 9)), float(10 ** rng.uniform(8, 11))
        r = c.create_run(
            eid,
            tags={
                "scalelab.role": "point",
                "scalelab.outcome": "finished",
                "scalelab.run_key": f"k{i}",
                "scalelab.study": "load_bench",
            },
        )
        params = {
            "n_params": int(N),
            "tokens": int(D),
            "flops": 6 * N * D,
            "seed": 0,
            "n_layer": 4,
            "d_model": 128,
            "lr": 1e-3,
            "schedule": "cosine",
            "experts": 0,
            "run_key": f"k{i}",
        }
        loss = 1.8 + 400 / N**0.34 + 2000 / D**0.36
        c.log_batch(
            r.info.run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
            metrics=[Metric("val_loss", loss, 1_700_000_000_000, int(D))],
        )
        c.set_terminated(r.info.run_id, "FINISHED")


def _replicate(uri, total):
    """Copy the seed runs (rows of runs, tags, params, metrics, latest_metrics) to `total`."""
    import sqlalchemy as sa

    eng = sa.create_engine(uri)
    tables = ("runs", "tags", "params", "metrics", "latest_metrics")
    with eng.begin() as con:
        frames = {t: pd.read_sql(sa.text(f"SELECT * FROM {t}"), con) for t in tables}
        seed_ids = frames["runs"]["run_uuid"].tolist()
        copies = int(np.ceil((total - len(seed_ids)) / len(seed_ids)))
        for k in range(copies):
            n = min(len(seed_ids), total - len(seed_ids) * (k + 1))
            ids = {rid: uuid.uuid4().hex for rid in seed_ids[:n]}
            for t in tables:
                f = frames[t][frames[t]["run_uuid"].isin(ids)].copy()
                f["run_uuid"] = f["run_uuid"].map(ids)
                if t == "runs":
                    f["name"] = f["name"].astype(str) + f"-{k}"
                    f["artifact_uri"] = f["artifact_uri"].astype(str) + f"-{k}"
                f.to_sql(t, con, if_exists="append", index=False)
    eng.dispose()


def build(db: Path, total: int) -> str:
    uri = f"sqlite:///{db}"
    if db.exists():
        c = _client(uri)
        exp = c.get_experiment_by_name("load_bench")
        if exp is not None and len(load_mlflow("load_bench", uri)) == total:
            return uri
        db.unlink()
    t = time.perf_counter()
    _seed(uri)
    _replicate(uri, total)
    print(f"built {db} with {total} point runs in {time.perf_counter() - t:.1f} s")
    return uri


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--db", type=Path, default=Path("/tmp/scalelab_load_bench.db"))
    args = ap.parse_args()
    uri = build(args.db, args.runs)
    w, c = time.perf_counter(), time.process_time()
    pts = load_mlflow("load_bench", uri)
    w_sql, c_sql = time.perf_counter() - w, time.process_time() - c
    w = time.perf_counter()
    client = _client(uri)
    runs = search_all_runs(client, _experiment_id(client, "load_bench"), "tags.`scalelab.role` = 'point'")
    w_api = time.perf_counter() - w
    same = sorted(r.info.run_id for r in runs) == sorted(pts.frame["run_id"])
    print(f"load_mlflow (direct SQL read): {len(pts)} runs in {w_sql:.2f} s wall ({c_sql:.2f} s CPU)")
    print(
        f"search_runs (pages of 50,000): {len(runs)} runs in {w_api:.2f} s wall; "
        f"same runs: {same}; speed-up {w_api / w_sql:.1f}x"
    )


if __name__ == "__main__":
    main()
