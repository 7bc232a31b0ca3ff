"""Loading (CSV/Parquet/MLflow) and the `fit` CLI contract."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import InputError, load_csv, load_curves, load_mlflow
from analysis.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _grid_csv(tmp_path, **cols):
    N = np.repeat(np.logspace(7, 9, 4), 4)
    D = np.tile(np.logspace(9, 11, 4), 4)
    L = 1.8 + 400 / N**0.34 + 2000 / D**0.36
    df = pd.DataFrame({"size": N, "toks": D, "val": L, **cols})
    p = tmp_path / "pts.csv"
    df.to_csv(p, index=False)
    return p, df


def test_load_csv_with_column_mapping_and_c_only(tmp_path):
    p, df = _grid_csv(tmp_path)
    pts = load_csv(p, n_col="size", d_col="toks", loss_col="val")
    np.testing.assert_allclose(pts.C, 6 * df["size"] * df.toks)
    df2 = pd.DataFrame({"N": df["size"], "FLOPs": 6 * df["size"] * df.toks, "loss": df.val})
    q = tmp_path / "c.parquet"
    df2.to_parquet(q)
    pts2 = load_csv(q, c_col="FLOPs")
    np.testing.assert_allclose(pts2.D, df.toks)
    assert "D derived from compute as C/(6N)" in pts2.notes


def test_status_column_excludes_failed(tmp_path):
    p, _ = _grid_csv(tmp_path, status=["finished"] * 14 + ["diverged", "failed"])
    pts = load_csv(p, n_col="size", d_col="toks", loss_col="val")
    assert len(pts) == 14 and pts.excluded == {"diverged": 1, "failed": 1}


def test_missing_column_message(tmp_path):
    p, _ = _grid_csv(tmp_path)
    with pytest.raises(InputError, match="--n-col"):
        load_csv(p, d_col="toks", loss_col="val")
    with pytest.raises(InputError, match="'nope'.*--loss-col"):
        load_csv(p, n_col="size", d_col="toks", loss_col="nope")


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_contract(epoch_csv, capsys):
    code, out, err = _run(
        [
            "fit",
            "--csv",
            str(epoch_csv),
            "--drop-top-loss",
            "5",
            "--budgets",
            "1e21,1e24",
            "--bootstrap",
            "50",
            "--form",
            "free",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["form"] == "free" and isinstance(res["form_scores"]["free"], float)
    for key in (
        "law",
        "n_points",
        "params",
        "objective",
        "converged",
        "ci95",
        "compute_optimal",
        "exponents",
    ):
        assert key in res
    assert res["law"] == "chinchilla" and res["n_points"] == 240 and res["converged"] is True
    assert set(res["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert abs(res["params"]["alpha"] - 0.3473) < 0.002
    assert set(res["exponents"]) == {"a", "b"}
    assert res["ci95"]["alpha"][0] < res["params"]["alpha"] < res["ci95"]["alpha"][1]
    co = res["compute_optimal"]
    assert [c["flops"] for c in co] == [1e21, 1e24]
    assert set(co[0]) == {"flops", "n_params", "tokens", "tokens_per_param", "loss"}
    assert abs(co[0]["tokens_per_param"] - 21.4) < 0.5
    assert res["excluded"] == {"outlier (top-loss)": 5}


def test_cli_kaplan_and_compute_laws(epoch_csv, capsys):
    for law in ("kaplan-n", "kaplan-d", "compute"):
        code, out, err = _run(["fit", "--csv", str(epoch_csv), "--law", law, "--json"], capsys)
        assert code == 0, err
        res = json.loads(out)
        assert res["law"] == law and res["params"]["alpha"] > 0


@pytest.mark.parametrize(
    "extra,frag",
    [
        (["--n-col", "nope"], "'nope'"),
        (["--budgets", "1e21,abc"], "--budgets"),
        (["--budgets", "-5"], "--budgets"),
    ],
)
def test_cli_bad_input_exit_2(epoch_csv, capsys, extra, frag):
    code, out, err = _run(["fit", "--csv", str(epoch_csv), *extra], capsys)
    assert code == 2 and frag in err and out == ""


def test_cli_bad_values_exit_2(tmp_path, capsys):
    p, df = _grid_csv(tmp_path)
    df.loc[3, "val"] = -1.0
    df.loc[5, "val"] = np.nan
    df.to_csv(p, index=False)
    code, out, err = _run(
        ["fit", "--csv", str(p), "--n-col", "size", "--d-col", "toks", "--loss-col", "val"], capsys
    )
    assert code == 2 and "'val'" in err and "non-positive" in err


def test_cli_missing_column_exit_2(tmp_path, capsys):
    p, _ = _grid_csv(tmp_path)
    code, out, err = _run(["fit", "--csv", str(p), "--loss-col", "val"], capsys)
    assert code == 2 and "--n-col" in err


def test_cli_single_model_size_unidentifiable(tmp_path, capsys):
    D = np.logspace(9, 11, 12)
    pd.DataFrame({"n_params": 1e8, "tokens": D, "loss": 2 + 1e3 / D**0.3}).to_csv(
        tmp_path / "one.csv", index=False
    )
    code, out, err = _run(["fit", "--csv", str(tmp_path / "one.csv"), "--json"], capsys)
    assert code == 2 and "single model size" in err
    res = json.loads(out)
    assert res["identifiable"] is False and res["params"]["alpha"] is None


def test_cli_too_few_points(tmp_path, capsys):
    pd.DataFrame(
        {"n_params": [1e7, 1e8, 1e9, 1e7], "tokens": [1e9, 1e9, 1e10, 1e10], "loss": [3, 2.8, 2.5, 2.9]}
    ).to_csv(tmp_path / "few.csv", index=False)
    code, out, err = _run(["fit", "--csv", str(tmp_path / "few.csv")], capsys)
    assert code == 2 and "more points than parameters" in err


def test_module_entry_point(epoch_csv):
    r = subprocess.run(
        [sys.executable, "-m", "analysis.cli", "fit", "--csv", str(epoch_csv), "--law", "compute", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["law"] == "compute"


# --------------------------------------------------------------------------- MLflow store
def _make_store(tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    eid = c.create_experiment("study1", artifact_location=str(tmp_path / "artifacts"))
    parent = c.create_run(eid, run_name="study1", tags={"scalelab.role": "parent"})
    sizes = np.logspace(6, 8, 4)
    toks = np.logspace(8, 10, 4)
    outcomes = ["finished"] * 14 + ["diverged", "killed"]
    i = 0
    for N in sizes:
        for D in toks:
            outcome = outcomes[i]
            r = c.create_run(
                eid,
                tags={
                    "mlflow.parentRunId": parent.info.run_id,
                    "scalelab.role": "point",
                    "scalelab.study": "study1",
                    "scalelab.run_key": f"k{i}",
                    "scalelab.outcome": outcome,
                },
            )
            params = {
                "run_key": f"k{i}",
                "n_params": int(N),
                "n_params_active": int(N),
                "tokens": int(D),
                "flops": 6 * N * D,
                "experts": 0,
                "top_k": 0,
                "seed": 0,
                "schedule": "cosine",
                "true_entropy": 1.75,
            }
            steps = np.linspace(D / 10, D, 10).astype(int)
            loss = 1.75 + 300 / N**0.35 + 1500 / steps**0.35
            ts = 1_700_000_000_000
            c.log_batch(
                r.info.run_id,
                params=[__import__("mlflow").entities.Param(k, str(v)) for k, v in params.items()],
                metrics=[
                    Metric("val_loss", float(v), ts + j, int(s)) for j, (s, v) in enumerate(zip(steps, loss))
                ],
            )
            c.set_terminated(
                r.info.run_id,
                "FINISHED" if outcome == "finished" else ("KILLED" if outcome == "killed" else "FAILED"),
            )
            i += 1
    # a trunk run (not a point) and a still-running point
    c.create_run(eid, tags={"mlflow.parentRunId": parent.info.run_id, "scalelab.role": "trunk"})
    c.create_run(
        eid,
        tags={
            "mlflow.parentRunId": parent.info.run_id,
            "scalelab.role": "point",
            "scalelab.outcome": "finished",
        },
    )
    return uri, parent.info.run_id


def test_load_mlflow_sqlite(tmp_path):
    uri, _ = _make_store(tmp_path)
    pts = load_mlflow("study1", uri)
    assert len(pts) == 14
    assert pts.excluded == {"diverged": 1, "killed": 1, "unfinished": 1}
    assert pts.true_entropy == 1.75
    assert {"n_params", "tokens", "flops", "loss", "run_id", "schedule", "seed"} <= set(pts.frame.columns)
    row = pts.frame.iloc[0]
    assert np.isclose(row.loss, 1.75 + 300 / row.n_params**0.35 + 1500 / row.tokens**0.35)
    allpts = load_mlflow("study1", uri, include_failed=True)
    assert len(allpts) == 16
    cur = load_curves("study1", uri)
    assert len(cur) == 14 * 10 and cur.groupby("run_id").size().eq(10).all()
    with pytest.raises(InputError, match="no MLflow experiment"):
        load_mlflow("nope", uri)


def test_cli_fit_from_mlflow(tmp_path, capsys):
    uri, _ = _make_store(tmp_path)
    code, out, err = _run(["fit", "--experiment", "study1", "--tracking-uri", uri, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["n_points"] == 14 and res["excluded"]["diverged"] == 1
    assert abs(res["params"]["alpha"] - 0.35) < 1e-3
