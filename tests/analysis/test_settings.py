"""Issue 9.2/9.3: fits per architecture/MoE setting (never pooled), `--group-by`, `--experts`,
and Approach 2 grouped by the designed `budget` param."""

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis import InputError, load_mlflow
from analysis.cli import main
from analysis.data import Points
from analysis.groups import select_setting, split_by
from analysis.laws.chinchilla import compute_optimal, predict_loss
from analysis.laws.isoflop import group_budgets, isoflop_fit

DENSE = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}


def _study_store(tmp_path):
    """A real SQLite MLflow store: 16 dense points and 2 MoE settings (8 experts top_k 1 and
    2), whose losses follow a different law (the MoE runs are better at their total size)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    eid = c.create_experiment("mix", artifact_location=str(tmp_path / "art"))
    parent = c.create_run(eid, tags={"scalelab.role": "parent"})
    i = 0
    for experts, top_k in ((1, 0), (8, 1), (8, 2)):
        for N in np.logspace(6, 8, 4):
            for D in np.logspace(8, 10, 4 if experts == 1 else 2):
                total = N * (1 if experts == 1 else 0.3 * experts)
                loss = predict_loss(DENSE, N * (1 if experts == 1 else 1.5 + top_k), D)
                r = c.create_run(
                    eid,
                    tags={
                        "mlflow.parentRunId": parent.info.run_id,
                        "scalelab.role": "point",
                        "scalelab.outcome": "finished",
                    },
                )
                params = {
                    "n_params": int(total),
                    "n_params_active": int(N),
                    "tokens": int(D),
                    "flops": 6 * N * D,
                    "experts": experts,
                    "top_k": top_k,
                }
                c.log_batch(
                    r.info.run_id,
                    params=[Param(k, str(v)) for k, v in params.items()],
                    metrics=[Metric("val_loss", float(loss), 0, int(D))],
                )
                c.set_terminated(r.info.run_id, "FINISHED")
                i += 1
    return uri


def _fit(argv, capsys):
    code = main(["fit", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fit_experiment_uses_dense_points_and_says_what_it_excluded(tmp_path, capsys):
    uri = _study_store(tmp_path)
    code, out, err = _fit(["--experiment", "mix", "--tracking-uri", uri, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["n_points"] == 16
    assert res["params"]["alpha"] == pytest.approx(DENSE["alpha"], abs=1e-3)  # not pooled
    assert res["excluded"] == {"other MoE setting (use --experts K or --group-by experts)": 16}
    assert any("16 dense points" in n and "excluded" in n for n in res["notes"])
    code, out, err = _fit(["--experiment", "mix", "--tracking-uri", uri], capsys)
    assert "other MoE setting" in out and "note: fitted the 16 dense points" in out


def test_group_by_experts_returns_one_fit_per_setting(tmp_path, capsys):
    uri = _study_store(tmp_path)
    code, out, err = _fit(
        [
            "--experiment",
            "mix",
            "--tracking-uri",
            uri,
            "--group-by",
            "experts",
            "--budgets",
            "1e18",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["n_points"] == 16 and "groups" in res
    groups = res["groups"]
    assert set(groups) == {"dense", "experts=8,top_k=1", "experts=8,top_k=2"}
    for label, g in groups.items():
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
            assert key in g, (label, key)
    assert groups["dense"]["params"] == res["params"]
    assert groups["experts=8,top_k=1"]["n_points"] == 8
    assert any("active parameter" in n for n in groups["experts=8,top_k=2"]["notes"])


def test_experts_selects_one_moe_setting(tmp_path):
    frame = pd.DataFrame(
        {
            "n_params": [1.0, 2, 3, 4, 5],
            "tokens": 1.0,
            "flops": 1.0,
            "loss": 1.0,
            "experts": [1, 1, 8, 8, 8],
            "top_k": [0, 0, 1, 1, 2],
        }
    )
    pts = select_setting(Points(frame), experts=8)
    assert len(pts) == 2 and set(pts.frame["top_k"]) == {1}
    assert "most populous of 2 settings" in pts.notes[-1]
    assert sum(pts.excluded.values()) == 3
    with pytest.raises(InputError, match="--experts 4.*1, 8"):
        select_setting(Points(frame), experts=4)


def test_group_by_arch_never_pools_objectives():
    frame = pd.DataFrame(
        {
            "n_params": np.arange(1.0, 7),
            "loss": 1.0,
            "arch": ["rope", "rope", "rope", "learned", "learned", "rope"],
            "objective": ["clm", "clm", "mlm", "clm", "clm", "clm"],
        }
    )
    groups = split_by(Points(frame), "arch")
    assert {k: len(v) for k, v in groups.items()} == {
        "learned,objective=clm": 2,
        "rope,objective=clm": 3,
        "rope,objective=mlm": 1,
    }
    assert {len(v) for v in split_by(Points(frame.drop(columns="objective")), "arch").values()} == {2, 4}
    with pytest.raises(InputError, match="--group-by nope"):
        split_by(Points(frame), "nope")


def _isoflop_runs(budgets=np.logspace(17, 20, 4)):
    """IsoFLOP points designed at C = 6ND whose logged FLOPs are 1.14-1.39x off, varying with N
    (as on configs/isoflop.yaml): clustering logged FLOPs splits each budget apart."""
    rows = []
    for C in budgets:
        n_opt = compute_optimal(DENSE, C).n_params[0]
        for j, x in enumerate(np.linspace(-1.0, 1.0, 7)):
            N = n_opt * np.exp(x)
            D = C / (6 * N)
            rows.append(
                dict(
                    n_params=N,
                    tokens=D,
                    flops=C * (1.14 if j % 2 else 1.39),
                    budget=C,
                    loss=predict_loss(DENSE, N, D),
                )
            )
    return pd.DataFrame(rows)


def test_approach2_groups_by_logged_budget():
    df = _isoflop_runs()
    assert len(np.unique(group_budgets(df["flops"]))) > 4  # FLOP clusters split budgets
    fit = isoflop_fit(df)
    assert fit.success_ and fit.budget_source_ == "budget" and len(fit.parabolas_) == 4
    expected = DENSE["beta"] / (DENSE["alpha"] + DENSE["beta"])
    assert fit.a_ == pytest.approx(expected, abs=0.01)
    co = fit.compute_optimal([1e21])
    assert co.tokens_per_param[0] == pytest.approx(compute_optimal(DENSE, 1e21).tokens_per_param[0], rel=0.05)
    # without the param, the same points fall back to FLOP clusters and the exponent is off
    fb = isoflop_fit(df.drop(columns="budget"))
    assert fb.budget_source_ == "flops clusters" and len(fb.parabolas_) > 4


def test_load_mlflow_reads_budget_as_a_number(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = MlflowClient(tracking_uri=uri)
    eid = c.create_experiment("iso", artifact_location=str(tmp_path / "a"))
    r = c.create_run(eid, tags={"scalelab.role": "point", "scalelab.outcome": "finished"})
    c.log_batch(
        r.info.run_id,
        params=[
            Param("n_params", "1000"),
            Param("tokens", "5000"),
            Param("flops", "3.4e7"),
            Param("budget", "3e7"),
        ],
        metrics=[Metric("val_loss", 3.0, 0, 5000)],
    )
    c.set_terminated(r.info.run_id, "FINISHED")
    pts = load_mlflow("iso", uri)
    assert pts.frame["budget"].iloc[0] == pytest.approx(3e7)
