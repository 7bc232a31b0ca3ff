"""Testing the answer by training: the runs `scalelab verify` adds on the IsoFLOP line of a
budget C, judged against the prediction.

The orchestrator trains K runs at C around the predicted N_opt (`design_factors`: N_opt and
log-spaced factors of it, each with the D that spends C in the study's FLOPs convention) and
tags them `scalelab.origin=verify`. They are never fitted (analysis.answer.prepare_points
leaves them out), so the prediction they test is the one made before they ran. `evaluate`:
  - predicted: the law's minimum along the line the runs lie on (interpolated between them in
    the study's own FLOPs convention), with the 95% interval of its N (the minimum of every
    bootstrap resample's law) and of its loss (a prediction interval);
  - observed: each run's loss against its own prediction and interval;
  - isoflop_min: the minimum of a parabola in log N through the observed losses, with a 95%
    interval from refits under the noise the law's residuals show;
  - held: the observed minimum's N interval overlaps the predicted one, and the run nearest
    the predicted N_opt lands inside its loss interval; `reason` says which failed and by how much.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

MIN_POINTS = 3
BUDGET_COL = "verify_budget"


def design_factors(k: int, width: float | None) -> np.ndarray:
    """N / N_opt of the K verify runs: log-spaced over +-s decades, s from the N_opt interval
    (half its width in decades, clipped to 0.3-0.6: 2x to 4x either side)."""
    w = width if width is not None and math.isfinite(width) and width > 1 else 1.0
    s = float(np.clip(0.5 * math.log10(w), 0.3, 0.6))
    return 10.0 ** np.linspace(-s, s, k)


def isoflop_line(budget: float, N, D, n: int = 241) -> tuple[np.ndarray, np.ndarray]:
    """A dense IsoFLOP line through runs (N_i, D_i) of one budget: N log-spaced from half the
    smallest to twice the largest, D = C / (6 N r(N)) with r = C / (6 N_i D_i), the study's
    FLOPs per token over 6N, interpolated in log N."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    order = np.argsort(N)
    lN = np.log(N[order])
    lr = np.log(budget / (6.0 * N[order] * D[order]))
    grid = np.linspace(lN[0] - math.log(2), lN[-1] + math.log(2), n)
    r = np.exp(np.interp(grid, lN, lr))
    Ng = np.exp(grid)
    return Ng, budget / (6.0 * Ng * r)


def _vertex(lN: np.ndarray, L: np.ndarray) -> tuple[float, float]:
    """(log N at the minimum, loss there) of a parabola in log N; +-inf when it has no
    minimum (the lower side), NaN loss then."""
    c = lN.mean()
    c2, c1, c0 = np.polyfit(lN - c, L, 2)
    if c2 > 0:
        u = -c1 / (2 * c2)
        return float(u + c), float(c0 - c1 * c1 / (4 * c2))
    return (-math.inf if c1 > 0 else math.inf), math.nan


def isoflop_minimum(N, L, noise_sd: float, *, n_draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The minimum of a parabola in log N through the observed losses, and its 95% interval
    from refits with each loss moved by lognormal noise of sd `noise_sd` (log loss). An end of
    the interval is None where more than 2.5% of refits have no minimum on that side."""
    N, L = np.asarray(N, float), np.asarray(L, float)
    lN = np.log(N)
    v, lv = _vertex(lN, L)
    rng = np.random.default_rng(seed)
    draws = L[None, :] * np.exp(rng.normal(0.0, max(noise_sd, 1e-6), (n_draws, L.size)))
    vs = np.array([_vertex(lN, d)[0] for d in draws])
    lo, hi = np.percentile(vs, [2.5, 97.5])
    note = ""
    if not math.isfinite(v):
        note = "the observed losses have no minimum in N (a parabola opening downward or a slope)"
    elif not lN.min() <= v <= lN.max():
        note = "the minimum lies outside the N the runs span (extrapolated)"
    return {
        "n_params": float(math.exp(v)) if math.isfinite(v) else None,
        "loss": lv if math.isfinite(lv) else None,
        "ci95": [
            float(math.exp(lo)) if math.isfinite(lo) else None,
            float(math.exp(hi)) if math.isfinite(hi) else None,
        ],
        "note": note,
    }


def _overlap(a, b) -> bool:
    lo1 = -math.inf if a[0] is None or not math.isfinite(a[0]) else a[0]
    hi1 = math.inf if a[1] is None or not math.isfinite(a[1]) else a[1]
    lo2 = -math.inf if b[0] is None else b[0]
    hi2 = math.inf if b[1] is None else b[1]
    return lo1 <= hi2 and lo2 <= hi1


def evaluate(answer, budget: float, frame: pd.DataFrame) -> dict[str, Any]:
    """The `scalelab verify --json` contract for the verify runs `frame` (n_params, tokens,
    loss; one budget) against `answer`: budget, predicted, observed, isoflop_min, held, reason."""
    f = frame.sort_values("n_params").reset_index(drop=True)
    N, D, L = (f[c].to_numpy(float) for c in ("n_params", "tokens", "loss"))
    out: dict[str, Any] = {"budget": float(budget)}
    Ng, Dg = isoflop_line(budget, N, D)
    out["predicted"] = answer.line_optimum(Ng, Dg)
    pred = answer.predict(N, D)
    out["observed"] = [
        {
            "n_params": float(n),
            "tokens": float(d),
            "loss": float(loss),
            "predicted": float(p),
            "ci95": [float(lo), float(hi)],
            **({"run_key": str(f["run_key"].iloc[i])} if "run_key" in f else {}),
        }
        for i, (n, d, loss, p, lo, hi) in enumerate(zip(N, D, L, pred["predicted"], pred["lo"], pred["hi"]))
    ]
    if len(f) < MIN_POINTS or np.unique(np.round(np.log(N), 6)).size < MIN_POINTS:
        out["isoflop_min"] = {"n_params": None, "ci95": [None, None], "loss": None, "note": "too few runs"}
        out["held"] = False
        out["reason"] = f"only {len(f)} verify run(s) with a loss at this budget; {MIN_POINTS} are needed"
        return out
    out["isoflop_min"] = isoflop_minimum(N, L, answer.residual_sd_large, seed=answer.seed)
    out["held"], out["reason"] = _held(out)
    return out


def _held(out: dict[str, Any]) -> tuple[bool, str]:
    p, m = out["predicted"], out["isoflop_min"]
    open_both = all(v is None for v in m["ci95"])
    n_ok = _overlap(p["n_params_ci95"], m["ci95"])
    near = min(out["observed"], key=lambda o: abs(math.log(o["n_params"] / p["n_params"])))
    lo, hi = near["ci95"]
    loss_ok = bool(math.isfinite(lo) and lo <= near["loss"] <= hi)

    def iv(ci):
        return "[" + ", ".join("open" if v is None or not math.isfinite(v) else f"{v:.3g}" for v in ci) + "]"

    if open_both:
        n_txt = (
            f"the observed losses do not locate the IsoFLOP minimum within the noise ({iv(m['ci95'])}), "
            f"so N_opt {p['n_params']:.3g} {iv(p['n_params_ci95'])} is not contradicted but not tested"
        )
    else:
        n_txt = (
            f"the observed IsoFLOP minimum N {m['n_params']:.3g} {iv(m['ci95'])}"
            if m["n_params"] is not None
            else f"the observed losses have no IsoFLOP minimum ({iv(m['ci95'])})"
        )
        n_txt += f" {'overlaps' if n_ok else 'misses'} the predicted N_opt {p['n_params']:.3g} {iv(p['n_params_ci95'])}"
    l_txt = (
        f"the run at N {near['n_params']:.3g} reached {near['loss']:.4g} nats/token, "
        f"{'inside' if loss_ok else 'outside'} its predicted {near['predicted']:.4g} {iv(near['ci95'])}"
    )
    held = n_ok and loss_ok
    return held, f"{'held' if held else 'did not hold'}: {l_txt}; {n_txt}"


def evaluate_all(answer, verify: pd.DataFrame) -> list[dict[str, Any]]:
    """`evaluate` per verify budget (column verify_budget, else the runs' FLOPs clustered)."""
    from .laws.isoflop import group_budgets

    f = verify.copy()
    if BUDGET_COL in f.columns:
        b = pd.to_numeric(f[BUDGET_COL], errors="coerce").to_numpy(float)
    else:
        b = np.full(len(f), np.nan)
    miss = ~np.isfinite(b)
    if miss.any():
        b[miss] = group_budgets(f["flops"].to_numpy(float)[miss])
    f["_budget"] = b
    return [evaluate(answer, float(C), g) for C, g in f.groupby("_budget")]
