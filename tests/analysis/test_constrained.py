"""Data-constrained law (Muennighoff et al. 2023): constants, R* fits, bounds, flags, CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.laws.constrained import (
    MUENNIGHOFF_C4,
    MUENNIGHOFF_C4_ROUNDED,
    DataConstrainedFit,
    data_constrained_loss,
)

BASE = {k: MUENNIGHOFF_C4[k] for k in ("E", "A", "B", "alpha", "beta")}


def test_unrounded_constants_reproduce_both_reference_losses():
    assert data_constrained_loss(6.34e9, 242e9, 25e9) == pytest.approx(2.2256441, abs=5e-8)
    assert data_constrained_loss(8.67e9, 178e9, 25e9) == pytest.approx(2.2269634, abs=5e-8)
    # the rounded constants printed in the paper do not (0.09% low)
    r = data_constrained_loss(6.34e9, 242e9, 25e9, MUENNIGHOFF_C4_ROUNDED)
    assert abs(r - 2.2256441) > 1e-3


def _runs(max_epochs=100):
    rows = [
        (N, U * ep, U)
        for N in np.logspace(7.5, 9.5, 5)
        for U in np.logspace(8.5, 10.5, 5)
        for ep in (1, 2, 4, 8, 16, 40, 100)
        if ep <= max_epochs
    ]
    df = pd.DataFrame(rows, columns=["n_params", "tokens", "unique_tokens"])
    df["loss"] = data_constrained_loss(df.n_params, df.tokens, df.unique_tokens)
    return df


def test_recovers_planted_r_stars_with_intervals():
    fit = DataConstrainedFit(base_params=BASE, n_bootstrap=20).fit(_runs())
    assert fit.success_, fit.message_
    assert fit.R_D_star_ == pytest.approx(15.387756, rel=1e-4)
    assert fit.R_N_star_ == pytest.approx(5.309743, rel=1e-4)
    assert fit.flat_ == {"R_D_star": False, "R_N_star": False}
    r = fit.result_
    assert r.law == "constrained" and set(r.ci95) == {"R_D_star", "R_N_star"}
    lo, hi = r.ci95["R_D_star"]
    assert lo <= 15.387756 * (1 + 1e-5) and hi >= 15.387756 * (1 - 1e-5)  # noise-free: tight


def test_single_epoch_runs_inform_r_n_star():
    """Only single-epoch runs: R_D* cannot be identified, R_N* still is (N > N_opt(U_D))."""
    fit = DataConstrainedFit(base_params=BASE).fit(_runs(max_epochs=1))
    assert fit.R_N_star_ == pytest.approx(5.309743, rel=1e-4)
    assert not fit.success_ and "R_D_star not identifiable" in fit.message_


def test_value_outside_identifiable_range_is_a_one_sided_bound():
    """Runs repeat data at most twice (R_D <= 1): R_D* = 15 cannot be told from infinity; the
    fit stops at the bound (10 x the largest R_D) and reports what the data do say, a one-sided
    bound, with R_D* not identifiable (the fit is usable: R_N* is identified)."""
    fit = DataConstrainedFit(base_params=BASE).fit(_runs(max_epochs=2))
    assert fit.R_D_star_ <= 10.0 + 1e-9
    assert fit.success_ and not fit.identifiable_
    side, v = fit.one_sided_["R_D_star"]
    assert side == ">" and 0 < v <= 10.0 * (1 + 1e-9) and f"R_D_star > {v:.3g}" in fit.message_
    r = fit.result_
    assert r.extra["at_bound"]["R_D_star"] and r.extra["identified"] == {"R_D_star": False, "R_N_star": True}
    assert r.ci95["R_D_star"][0] == v and r.ci95["R_D_star"][1] == float("inf")


def test_cli_base_law_fixes_the_base_and_reports_a_bound(tmp_path, capsys):
    """--base-law fixes E, A, B, alpha, beta (R* alone are fitted); --base-from reads a fit
    --json; a parameter at its bound exits 0 with identifiable false and a one-sided bound."""
    p = tmp_path / "dc.csv"
    _runs(max_epochs=2).to_csv(p, index=False)
    base = ",".join(f"{k}={v!r}" for k, v in BASE.items())
    code = main(["fit", "--csv", str(p), "--law", "constrained", "--base-law", base, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    res = json.loads(out.out)
    assert res["identifiable"] is False and res["success"] is True
    assert res["one_sided"]["R_D_star"].startswith("R_D_star > ")
    assert res["params"]["E"] == pytest.approx(BASE["E"]) and res["base_law"] == "given"
    assert res["params"]["R_N_star"] == pytest.approx(5.309743, rel=0.05)  # R_D* pinned at its bound
    f = tmp_path / "fit.json"
    f.write_text(json.dumps({"params": BASE}))
    assert main(["fit", "--csv", str(p), "--law", "constrained", "--base-from", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["alpha"] == pytest.approx(BASE["alpha"])
    assert main(["fit", "--csv", str(p), "--law", "constrained", "--base-law", "E=1,A=2"]) == 2
    assert "--base-law" in capsys.readouterr().err


def test_cli_constrained_with_epochs_column(tmp_path, capsys):
    df = _runs()
    df["loss"] *= np.exp(np.random.default_rng(0).normal(0, 0.002, len(df)))
    df["Epochs"] = df.tokens / df.unique_tokens
    p = tmp_path / "dc.csv"
    df.drop(columns="unique_tokens").to_csv(p, index=False)
    code = main(
        [
            "fit",
            "--csv",
            str(p),
            "--law",
            "constrained",
            "--epochs-col",
            "EPOCHS",
            "--bootstrap",
            "10",
            "--json",
        ]
    )
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert res["law"] == "constrained" and res["n_points"] == len(df)
    assert {"R_D_star", "R_N_star", "E", "alpha"} <= set(res["params"])
    assert set(res["ci95"]) == {"R_D_star", "R_N_star"} and "flat" in res
    assert code in (0, 1), out.err


def test_cli_constrained_needs_unique_tokens(tmp_path, capsys):
    p = tmp_path / "x.csv"
    _runs().drop(columns="unique_tokens").to_csv(p, index=False)
    assert main(["fit", "--csv", str(p), "--law", "constrained"]) == 2
    assert "--unique-col" in capsys.readouterr().err


def test_constrained_report_section_only_when_data_repeat():
    from types import SimpleNamespace

    from analysis.data import Points
    from analysis.laws.constrained import fit_constrained_points
    from analysis.report.sections_more import constrained_section

    df = _runs()
    df["flops"] = 6 * df.n_params * df.tokens
    fit = fit_constrained_points(Points(df), n_bootstrap=5)
    sec = constrained_section(SimpleNamespace(constrained=fit))
    assert sec["title"] == "Data-constrained scaling" and "| R_D_star | 15.39" in sec["markdown"]
    assert fit_constrained_points(Points(df[df.tokens <= df.unique_tokens])) is None
