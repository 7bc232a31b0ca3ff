"""Validating a fit: extrapolation, leave-one-out, residuals by compute decile, true entropy.

All errors are relative loss errors |L^ - L| / L on held-out points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import weighted_refits
from .laws.chinchilla import ChinchillaFit, predict_loss, theta_to_params


@dataclass
class ExtrapolationResult:
    threshold: float
    n_fit: int
    n_test: int
    mean_rel_error: float
    max_rel_error: float
    fit: ChinchillaFit
    table: pd.DataFrame  # the test points: flops, n_params, tokens, loss, predicted, rel_error
    success: bool
    message: str


def extrapolation_test(N, D, loss, C=None, *, threshold: float = 1e20, fitter=None) -> ExtrapolationResult:
    """Fit Approach 3 on runs with C <= threshold; predict the runs above it."""
    N, D, L = (np.asarray(v, float) for v in (N, D, loss))
    C = 6 * N * D if C is None else np.asarray(C, float)
    lo = C <= threshold
    fit = (fitter or ChinchillaFit()).fit(N[lo], D[lo], L[lo])
    hi = ~lo
    if not fit.success_ or hi.sum() == 0:
        msg = fit.message_ if not fit.success_ else f"no points above C = {threshold:.3g}"
        return ExtrapolationResult(
            threshold, int(lo.sum()), int(hi.sum()), np.nan, np.nan, fit, pd.DataFrame(), False, msg
        )
    pred = fit.predict(N[hi], D[hi])
    rel = np.abs(pred - L[hi]) / L[hi]
    tab = pd.DataFrame(
        {
            "flops": C[hi],
            "n_params": N[hi],
            "tokens": D[hi],
            "loss": L[hi],
            "predicted": pred,
            "rel_error": rel,
        }
    )
    return ExtrapolationResult(
        threshold,
        int(lo.sum()),
        int(hi.sum()),
        float(rel.mean()),
        float(rel.max()),
        fit,
        tab,
        True,
        f"fit on {int(lo.sum())} runs with C <= {threshold:.3g}, tested on {int(hi.sum())} above",
    )


def leave_one_out(N, D, loss, *, full_fit: ChinchillaFit | None = None, n_jobs=None) -> pd.DataFrame:
    """Leave-one-out: refit without each point (all refits batched, warm-started from the
    full-data optimum) and predict it. Returns per-point predicted and rel_error."""
    N, D, L = (np.asarray(v, float) for v in (N, D, loss))
    full_fit = full_fit or ChinchillaFit().fit(N, D, L)
    W = 1.0 - np.eye(N.size)
    T, _ = weighted_refits(N, D, L, W, full_fit.theta_, n_jobs=n_jobs)
    pred = np.array([predict_loss(theta_to_params(t), n, d) for t, n, d in zip(T, N, D)])
    return pd.DataFrame(
        {"n_params": N, "tokens": D, "loss": L, "predicted": pred, "rel_error": np.abs(pred - L) / L}
    )


def residuals_by_decile(N, D, loss, params, C=None, *, n_bins: int = 10) -> pd.DataFrame:
    """Log residuals (log L^ - log L) grouped by compute decile: median, mean, MAD, count."""
    N, D, L = (np.asarray(v, float) for v in (N, D, loss))
    C = 6 * N * D if C is None else np.asarray(C, float)
    r = np.log(predict_loss(params, N, D)) - np.log(L)
    q = pd.qcut(np.log(C), q=min(n_bins, np.unique(C).size), labels=False, duplicates="drop")
    df = pd.DataFrame({"decile": q, "flops": C, "residual": r})
    g = df.groupby("decile")
    return pd.DataFrame(
        {
            "flops_min": g["flops"].min(),
            "flops_max": g["flops"].max(),
            "n": g.size(),
            "mean_residual": g["residual"].mean(),
            "median_residual": g["residual"].median(),
            "mean_abs_residual": g["residual"].apply(lambda v: np.abs(v).mean()),
        }
    )


def entropy_check(fitted_E: float, true_entropy: float | None, ci=None) -> dict:
    """Compare the fitted irreducible loss E with the corpus' known entropy rate."""
    if true_entropy is None or not np.isfinite(true_entropy):
        return {"available": False}
    out: dict[str, Any] = {
        "available": True,
        "true_entropy": float(true_entropy),
        "fitted_E": float(fitted_E),
        "difference": float(fitted_E - true_entropy),
        "rel_difference": float((fitted_E - true_entropy) / true_entropy),
    }
    if ci is not None:
        out["ci"] = [float(ci[0]), float(ci[1])]
        out["covered"] = bool(ci[0] <= true_entropy <= ci[1])
    return out
