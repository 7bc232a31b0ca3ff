"""The answer a report leads with: compute-optimal N, D and loss per budget, and how far to trust it.

Pure functions of the fitted results (a ReportContext or anything with the same attributes:
approach3, approach2, approach1, boot, extrapolation, base, budgets).

The verdict combines three numbers, each printed beside it:
  - the extrapolation error: mean relative loss error of Approach 3 fitted on the cheaper 60%
    of runs and tested on the most expensive 40% (validate.extrapolation_test);
  - the agreement between approaches: the ratio max/min of N_opt across every identified
    approach at that budget (1 when only one approach is identified);
  - how many decades (log10 C/C_max) the budget lies beyond the largest run.
  good:  error <= 1%, approaches within 2x, at most 1 decade out;
  rough: error <= 3%, approaches within 4x, at most 2 decades out;
  poor:  anything worse, or an error that could not be measured.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

APPROACHES = (("Approach 3", "approach3"), ("Approach 2", "approach2"), ("Approach 1", "approach1"))
WORDS = {
    "good": "reliable at this budget",
    "rough": "an order-of-magnitude guide only",
    "poor": "do not rely on it",
}


def identified(ctx) -> list[tuple[str, Any]]:
    """[(name, estimator)] of the approaches whose fit succeeded, Approach 3 first."""
    out = []
    for name, attr in APPROACHES:
        est = getattr(ctx, attr, None)
        if est is not None and getattr(est, "success_", False):
            out.append((name, est))
    return out


def budget_key(C: float) -> str:
    """A budget as it appears in MLflow keys and tables: 1e21, 3.5e21."""
    mant, exp = f"{C:.3g}".split("e") if "e" in f"{C:.3g}" else (f"{C:.3g}", "0")
    return f"{mant}e{int(exp)}"


def _ci(ctx, name: str, C: float) -> tuple[float, float]:
    boot = getattr(ctx, "boot", None)
    if boot is None:
        return (math.nan, math.nan)
    return tuple(boot.ci.get(f"{name}@{C:.3g}", (math.nan, math.nan)))


def answer_rows(ctx) -> pd.DataFrame:
    """One row per budget from the first identified approach, with 95% CIs (Approach 3 with a
    bootstrap), the decades beyond the largest run, the approaches' N_opt ratio and verdict."""
    found = identified(ctx)
    if not found:
        return pd.DataFrame()
    name, est = found[0]
    cmax = float(np.max(ctx.base["flops"]))
    co = est.compute_optimal(ctx.budgets)
    n_opts = np.array([e.compute_optimal(ctx.budgets)["n_params"].to_numpy() for _, e in found])
    ext = extrapolation_error(ctx)
    rows = []
    for i, r in enumerate(co.itertuples()):
        dec = math.log10(r.flops / cmax)
        ratio = float(np.max(n_opts[:, i]) / np.min(n_opts[:, i]))
        level = verdict_level(ext, ratio, dec)
        row = {"approach": name, "flops": r.flops, "decades_beyond": dec}
        for key, val, ci in (
            ("n_params", r.n_params, "N_opt"),
            ("tokens", r.tokens, "D_opt"),
            ("tokens_per_param", r.tokens_per_param, "D/N"),
            ("loss", r.loss, "loss"),
        ):
            lo, hi = _ci(ctx, ci, r.flops) if name == "Approach 3" else (math.nan, math.nan)
            row.update({key: val, f"{key}_lo": lo, f"{key}_hi": hi})
        row.update(approach_ratio=ratio, verdict=level)
        rows.append(row)
    return pd.DataFrame(rows)


def extrapolation_error(ctx) -> float | None:
    ex = getattr(ctx, "extrapolation", None)
    return float(ex.mean_rel_error) if ex is not None and ex.success else None


def verdict_level(ext_error: float | None, ratio: float, decades: float) -> str:
    """good / rough / poor from the extrapolation error, approach ratio and decades out."""
    if ext_error is None or not np.isfinite(ratio):
        return "poor"
    if ext_error <= 0.01 and ratio <= 2 and decades <= 1:
        return "good"
    if ext_error <= 0.03 and ratio <= 4 and decades <= 2:
        return "rough"
    return "poor"


def verdict_text(ctx, rows: pd.DataFrame) -> str:
    """The plain verdict, with the numbers it rests on."""
    ext = extrapolation_error(ctx)
    found = identified(ctx)
    parts = [
        (
            "extrapolation error "
            + (
                f"{ext:.2%} (fitted on the cheaper 60% of runs, tested on the rest)"
                if ext is not None
                else "not measurable (too few runs to hold out)"
            )
        )
    ]
    if len(found) > 1:
        a = [est.result_.exponents.get("a") for _, est in found]
        parts.append(
            f"{len(found)} approaches give a from {min(a):.3f} to {max(a):.3f} and "
            f"N_opt up to {rows['approach_ratio'].max():.3g}x apart"
        )
    else:
        parts.append("only one approach is identified, so there is no cross-check")
    per = [
        f"{budget_key(r.flops)} FLOPs ({r.decades_beyond:+.1f} decades): {r.verdict}, {WORDS[r.verdict]}"
        for r in rows.itertuples()
    ]
    return "Verdict: " + "; ".join(per) + ". Based on: " + "; ".join(parts) + "."


def exponent_rows(ctx) -> pd.DataFrame:
    """a and b (N_opt ~ C^a, D_opt ~ C^b) from every identified approach, side by side."""
    rows = []
    boot = getattr(ctx, "boot", None)
    for name, est in identified(ctx):
        ex = est.result_.exponents
        row = {"approach": name, "a": ex.get("a"), "b": ex.get("b")}
        if name == "Approach 3" and boot is not None:
            row["a 95% CI"] = "[{:.3g}, {:.3g}]".format(*boot.ci.get("a", (math.nan,) * 2))
            row["b 95% CI"] = "[{:.3g}, {:.3g}]".format(*boot.ci.get("b", (math.nan,) * 2))
        rows.append(row)
    return pd.DataFrame(rows)


def headline(ctx, rows: pd.DataFrame, setting: str) -> dict:
    """{"metrics", "params"} for the study's parent MLflow run (keys documented in README):
    fit.<E|A|B|alpha|beta|a|b>[.ci95_lo|.ci95_hi], opt.<budget>.<n_params|tokens|
    tokens_per_param|loss|decades_beyond>[.ci95_lo|.ci95_hi]; params fit.approach, fit.setting,
    fit.n_points, fit.budgets, fit.verdict and the same numbers as text (4 significant figures)."""
    metrics: dict[str, float] = {}
    a3 = getattr(ctx, "approach3", None)
    boot = getattr(ctx, "boot", None)
    if a3 is not None and a3.success_:
        res = a3.result_
        for k, v in {**res.params, **res.exponents}.items():
            metrics[f"fit.{k}"] = float(v)
            if boot is not None and k in boot.ci:
                metrics[f"fit.{k}.ci95_lo"], metrics[f"fit.{k}.ci95_hi"] = map(float, boot.ci[k])
    for r in rows.to_dict("records"):
        pre = f"opt.{budget_key(r['flops'])}"
        metrics[f"{pre}.decades_beyond"] = float(r["decades_beyond"])
        for k in ("n_params", "tokens", "tokens_per_param", "loss"):
            metrics[f"{pre}.{k}"] = float(r[k])
            metrics[f"{pre}.{k}.ci95_lo"], metrics[f"{pre}.{k}.ci95_hi"] = r[f"{k}_lo"], r[f"{k}_hi"]
    metrics = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    params = {
        "fit.approach": rows["approach"].iloc[0] if len(rows) else "none identified",
        "fit.setting": setting,
        "fit.n_points": str(len(ctx.base)),
        "fit.budgets": ",".join(budget_key(C) for C in ctx.budgets),
        "fit.verdict": ",".join(rows["verdict"]) if len(rows) else "none",
    }
    params.update(
        {
            k: f"{v:.4g}"
            for k, v in metrics.items()
            if not k.endswith(("ci95_lo", "ci95_hi", "decades_beyond"))
        }
    )
    return {"metrics": metrics, "params": params}
