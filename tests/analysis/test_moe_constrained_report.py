"""MoE laws, the data-constrained form, and the report (built from synthetic data)."""

import numpy as np
import pandas as pd
import pytest

from analysis.data import Points
from analysis.laws.chinchilla import compute_optimal, predict_loss
from analysis.laws.constrained import data_constrained_loss, effective_data
from analysis.laws.moe import (
    effective_dense_params,
    fit_clark,
    fit_krajewski,
    fit_moe_per_config,
    saturating_experts,
)
from analysis.report import log_report_to_mlflow, write_report

DENSE = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}


def _synthetic_study(rng, noise=0.003):
    rows = []
    # dense IsoFLOP-style grid: 4 budgets x 6 sizes around the optimum
    for C in np.logspace(16, 19, 4):
        n_opt = compute_optimal(DENSE, C).n_params[0]
        for x in np.linspace(-1.2, 1.2, 6):
            N = n_opt * np.exp(x)
            D = C / (6 * N)
            rows.append(
                dict(
                    experts=1,
                    top_k=0,
                    granularity=1,
                    n_params=N,
                    n_params_active=N,
                    tokens=D,
                    flops=C,
                    budget=C,
                    run_id=f"d{len(rows)}",
                )
            )
    # MoE runs: 8 and 16 experts, granularity 1, 2, 4
    for E_ in (8, 16):
        for G in (1, 2, 4):
            for N in np.logspace(6, 8, 3):
                for D in np.logspace(8, 10, 3):
                    rows.append(
                        dict(
                            experts=E_,
                            top_k=1,
                            granularity=G,
                            n_params=N * E_,
                            n_params_active=N,
                            tokens=D,
                            flops=6 * N * D,
                            run_id=f"m{len(rows)}",
                        )
                    )
    df = pd.DataFrame(rows)
    boost = 1 + 0.15 * np.log(df["experts"]) * df["granularity"] ** 0.2
    df["loss"] = (
        DENSE["E"]
        + DENSE["A"] / boost / df["n_params_active"] ** DENSE["alpha"]
        + DENSE["B"] / df["tokens"] ** DENSE["beta"]
    ) * np.exp(rng.normal(0, noise, len(df)))
    return df


def test_saturating_transform():
    assert saturating_experts(1) == pytest.approx(1.0)
    np.testing.assert_allclose(saturating_experts([2, 8, 64]), [2, 8, 64])
    s = saturating_experts([8, 64, 512, 4096], E_start=1.0, E_max=100.0)
    assert np.all(np.diff(s) > 0) and s[-1] < 100


def test_moe_fits(rng):
    df = _synthetic_study(rng)
    per = fit_moe_per_config(df)
    assert len(per) == 6 and all(f.success_ for f in per.values())
    clark = fit_clark(df)
    assert clark.success_ and clark.coef_["b"] < 0  # more experts, lower loss
    kraj = fit_krajewski(df[df.experts == 8])
    assert kraj.success_ and abs(kraj.params_["c"] - DENSE["E"]) < 0.15
    # effective dense N of an exactly-dense loss is the dense N
    N, D = 1e8, 1e10
    assert effective_dense_params(predict_loss(DENSE, N, D), D, DENSE) == pytest.approx(N, rel=1e-9)


def test_moe_small_data_unidentifiable():
    df = pd.DataFrame(
        {
            "experts": [8] * 6,
            "n_params_active": np.logspace(6, 8, 6),
            "n_params": 8 * np.logspace(6, 8, 6),
            "tokens": 1e9,
            "granularity": 1,
            "loss": np.linspace(3, 2.5, 6),
        }
    )
    assert "unidentifiable" in fit_clark(df).message_
    assert "unidentifiable" in fit_krajewski(df).message_


def test_data_constrained_reference_values():
    """Muennighoff et al.'s C4 fit with the unrounded constants reproduces SCALING.md's check
    values exactly (to their 8 printed digits)."""
    assert data_constrained_loss(6.34e9, 242e9, 25e9) == pytest.approx(2.2256441, abs=5e-8)
    assert data_constrained_loss(8.67e9, 178e9, 25e9) == pytest.approx(2.2269634, abs=5e-8)
    # one epoch: no decay; many epochs: D' saturates at U_D (1 + R_D*)
    assert effective_data(25e9, 25e9, 15.39) == pytest.approx(25e9)
    assert effective_data(25e9 * 1e4, 25e9, 15.39) == pytest.approx(25e9 * 16.39, rel=1e-6)


def test_report_dense_only(tmp_path, rng):
    df = _synthetic_study(rng)
    df = df[df.experts == 1]
    paths = write_report(
        Points(df, source="dense"), tmp_path / "d", budgets=[1e20], n_bootstrap=0, grid="coarse"
    )
    assert "data:image/png;base64," in paths.html.read_text()
    md = paths.markdown.read_text()
    assert "| alpha |" in md and "No MoE runs" in md


def test_report_when_moe_runs_beat_every_dense_model(tmp_path, rng):
    # small-D MoE runs below the dense law's floor E + B/D^beta: the effective dense N is
    # unbounded (inf); the report says so instead of failing to draw the multiplier plot
    df = _synthetic_study(rng)
    dense = df[df.experts == 1]
    moe = df[(df.experts == 8) & (df.granularity == 1)].copy()
    moe["loss"] = (DENSE["E"] + DENSE["B"] / moe["tokens"] ** DENSE["beta"]) * 0.97
    paths = write_report(
        Points(pd.concat([dense, moe]), source="s"),
        tmp_path / "m",
        budgets=[1e20],
        n_bootstrap=0,
        grid="coarse",
    )
    md = paths.markdown.read_text()
    assert "Effective dense parameter count" in md and "multiplier is unbounded" in md
    assert (tmp_path / "m" / "moe.png").stat().st_size > 0


@pytest.mark.slow  # ~10 s alone, 25 s on a loaded 2-core machine (MoE fits)
def test_report_from_synthetic_study(tmp_path, rng):
    df = _synthetic_study(rng)
    pts = Points(df, source="synthetic", excluded={"diverged": 2}, true_entropy=1.8)
    paths = write_report(pts, tmp_path / "rep", budgets=[1e19, 1e21], n_bootstrap=30, grid="coarse")
    page = paths.html.read_text()
    assert page.count("data:image/png;base64,") >= 7
    md = paths.markdown.read_text()
    for frag in (
        "| alpha |",
        "| beta |",
        "| E |",
        "IsoFLOP",
        "Compute-optimal",
        "Mixture of experts",
        "excluded diverged: 2",
        "Cross-validation over compute",
        "Known entropy",
        "Clark",
        "Krajewski",
        "Effective dense parameter count",
    ):
        assert frag in md, frag
    a3 = paths.results["approach3"]
    assert abs(a3.params_["alpha"] - DENSE["alpha"]) < 0.05
    assert paths.results["approach2"].success_


def test_log_report_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = MlflowClient(tracking_uri=uri)
    eid = c.create_experiment("s", artifact_location=str(tmp_path / "art"))
    parent = c.create_run(eid, tags={"scalelab.role": "parent"})
    c.create_run(eid, tags={"scalelab.role": "point"})
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.html").write_text("<html></html>")
    (out / "summary.md").write_text("# x")
    rid = log_report_to_mlflow(out, "s", uri)
    assert rid == parent.info.run_id
    names = {f.path for f in c.list_artifacts(rid, "report")}
    assert names == {"report/report.html", "report/summary.md"}
