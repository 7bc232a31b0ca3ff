"""Chinchilla Approaches 1 (lower envelope of training curves) and 2 (IsoFLOP parabolas).

Approach 2: runs are grouped into IsoFLOP budgets (a `budget` column when the study logged one,
else clusters of FLOPs within `budget_rtol`); at each budget a parabola of loss in log N is
fitted and its vertex is the budget's N_opt (D_opt = C / (6 N_opt)); log N_opt and log D_opt are
then regressed on log C: N_opt = k_N C^a, D_opt = k_D C^b. On data that is exactly parabolic in
log N the exponent is exact; on a Chinchilla law it is accurate when the samples bracket the
minimum closely (the parabola is a local approximation).

Approach 1: the lower envelope of loss over FLOPs; the N of the run on the envelope at each C
gives N_opt(C). From each run's final point (valid for any schedule) the envelope is the
compute frontier; from training curves (valid only for WSD cooldowns or a constant learning
rate: intermediate points of a cosine run are biased upward, SCALING.md) it is the lower
envelope of the interpolated curves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..result import FitResult, estimator_result
from .kaplan import PowerLawFit, lower_envelope


def _powerlaw_ls(C, Y):
    """Least squares of log Y on log C: Y = k C^e. Returns (k, e, r2)."""
    x, y = np.log(C), np.log(Y)
    A = np.vstack([np.ones_like(x), x]).T
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    ss = np.sum((y - y.mean()) ** 2)
    return float(np.exp(coef[0])), float(coef[1]), float(1 - resid @ resid / ss) if ss > 0 else np.nan


def group_budgets(flops, *, budget_rtol: float = 0.05) -> np.ndarray:
    """Cluster FLOP values into budgets: a new budget starts where log C jumps by more than
    log(1 + budget_rtol). Returns the budget (geometric mean of its cluster) per point."""
    C = np.asarray(flops, float)
    if C.size == 0:
        return C.copy()
    order = np.argsort(C)
    lc = np.log(C[order])
    breaks = np.concatenate([[True], np.diff(lc) > np.log1p(budget_rtol)])
    lab = np.cumsum(breaks) - 1
    centers = np.exp(pd.Series(lc).groupby(lab).mean().to_numpy())
    out = np.empty_like(C)
    out[order] = centers[lab]
    return out


def point_budgets(
    frame: pd.DataFrame, *, budget_col: str = "budget", budget_rtol: float = 0.05
) -> np.ndarray:
    """The IsoFLOP budget of every point: its designed `budget` (logged by IsoFLOP studies)
    where present, else the cluster of its logged FLOPs (`group_budgets`)."""
    out = np.full(len(frame), np.nan)
    if budget_col in frame.columns:
        out = pd.to_numeric(frame[budget_col], errors="coerce").to_numpy(float)
    missing = ~(np.isfinite(out) & (out > 0))
    if missing.any():
        out[missing] = group_budgets(frame["flops"].to_numpy(float)[missing], budget_rtol=budget_rtol)
    return out


class _AllocationFit:
    """Shared by Approaches 1 and 2: N_opt = k_n C^a, D_opt = k_d C^b, as a FitResult."""

    k_n_: float  # fitted by the subclass: N_opt = k_n_ C^a_, D_opt = k_d_ C^b_
    a_: float
    k_d_: float
    b_: float

    law = "allocation"

    def _optimal_loss(self, C: np.ndarray) -> np.ndarray:
        return np.full(C.size, np.nan)

    def compute_optimal(self, flops) -> pd.DataFrame:
        C = np.atleast_1d(np.asarray(flops, float))
        N = self.k_n_ * C**self.a_
        D = self.k_d_ * C**self.b_
        return pd.DataFrame(
            {"flops": C, "n_params": N, "tokens": D, "tokens_per_param": D / N, "loss": self._optimal_loss(C)}
        )

    @property
    def result_(self) -> FitResult:
        """This fit as a FitResult: params k_n, a, k_d, b; objective is NaN (a regression)."""
        if not hasattr(self, "success_"):
            raise AttributeError(f"{type(self).__name__} is not fitted")
        return estimator_result(
            self,
            self.law,
            {"k_n": self.k_n_, "a": self.a_, "k_d": self.k_d_, "b": self.b_},
            exponents={"a": self.a_, "b": self.b_},
            objective=float("nan"),
        )


def _parabola(C: float, g: pd.DataFrame, min_runs: int, require_bracketed: bool) -> dict:
    """Fit L = c0 + c1 u + c2 u^2, u = log N - mean log N, to one IsoFLOP group; its vertex is
    the budget's N_opt. D_opt comes from the group's own tokens (log D linear in log N), so it
    holds whatever FLOP convention the budget was logged in."""
    x = np.log(g["n_params"].to_numpy(float))
    L = g["loss"].to_numpy(float)
    row: dict[str, Any] = {
        "budget": float(C),
        "n_runs": len(g),
        "c0": np.nan,
        "c1": np.nan,
        "c2": np.nan,
        "n_opt": np.nan,
        "d_opt": np.nan,
        "loss_opt": np.nan,
        "in_range": False,
        "ok": False,
        "note": "",
    }
    if np.unique(np.round(x, 9)).size < min_runs:
        row["note"] = f"fewer than {min_runs} distinct N"
        return row
    xc = x.mean()  # centre log N for conditioning
    c2, c1, c0 = np.polyfit(x - xc, L, 2)
    row.update(c0=c0, c1=c1, c2=c2, log_n_center=xc)
    if not c2 > 0:
        row["note"] = "parabola opens downward: no minimum"
        return row
    xv = -c1 / (2 * c2)
    row["n_opt"] = float(np.exp(xv + xc))
    if "tokens" in g and np.all(np.asarray(g["tokens"], float) > 0):
        k1, k0 = np.polyfit(x - xc, np.log(g["tokens"].to_numpy(float)), 1)
        row["d_opt"] = float(np.exp(k0 + k1 * xv))
    else:
        row["d_opt"] = float(C / (6 * row["n_opt"]))
    row["loss_opt"] = float(c0 - c1 * c1 / (4 * c2))
    row["in_range"] = bool(x.min() - xc <= xv <= x.max() - xc)
    row["ok"] = row["in_range"] or not require_bracketed
    if not row["in_range"]:
        row["note"] = "vertex outside the sampled N range (extrapolated)"
    return row


class IsoFLOPFit(_AllocationFit):
    """Approach 2 estimator. fit(frame) with columns n_params, loss, flops (and `budget`, the
    designed budget, when the study logged one; tokens, when known, give D_opt).

    Fitted: parabolas_ (per budget: budget, n_runs, c0, c1, c2, n_opt, d_opt, loss_opt,
    in_range, ok, note), a_, b_ (exponents), k_n_, k_d_, r2_n_, loss_law_ (PowerLawFit of the
    vertex losses in C, when >= 4 budgets), budget_source_ ("budget" or "flops clusters"),
    n_points_, success_, message_, result_ (FitResult).
    """

    law = "isoflop"

    def __init__(
        self,
        *,
        budget_col: str = "budget",
        budget_rtol: float = 0.05,
        min_runs: int = 3,
        require_bracketed: bool = False,
    ):
        self.budget_col = budget_col
        self.budget_rtol = budget_rtol
        self.min_runs = min_runs
        self.require_bracketed = require_bracketed

    def fit(self, frame: pd.DataFrame):
        budgets = point_budgets(frame, budget_col=self.budget_col, budget_rtol=self.budget_rtol)
        logged = self.budget_col in frame.columns and frame[self.budget_col].notna().any()
        self.budget_source_ = "budget" if logged else "flops clusters"
        self.n_points_ = len(frame)
        rows = [
            _parabola(C, g, self.min_runs, self.require_bracketed)
            for C, g in frame.assign(_budget=budgets).groupby("_budget")
        ]
        self.parabolas_ = pd.DataFrame(rows)
        ok = self.parabolas_[self.parabolas_["ok"]] if len(self.parabolas_) else self.parabolas_
        nan = float("nan")
        self.a_ = self.b_ = self.k_n_ = self.k_d_ = self.r2_n_ = nan
        self.loss_law_ = None
        if len(ok) < 2 or ok["budget"].nunique() < 2:
            self.success_ = False
            self.message_ = (
                f"unidentifiable: {len(ok)} usable IsoFLOP budget(s); need >= 2 budgets "
                f"with >= {self.min_runs} distinct N and a convex parabola"
            )
            return self
        self.k_n_, self.a_, self.r2_n_ = _powerlaw_ls(ok["budget"], ok["n_opt"])
        self.k_d_, self.b_, _ = _powerlaw_ls(ok["budget"], ok["d_opt"])
        if len(ok) >= 4:
            self.loss_law_ = PowerLawFit(variable="C").fit(ok["budget"], ok["loss_opt"])
        self.success_ = True
        n_out = int((~self.parabolas_["in_range"]).sum())
        self.message_ = (
            f"{len(ok)} IsoFLOP budgets (grouped by {self.budget_source_}); "
            f"N_opt ~ C^{self.a_:.4f}, D_opt ~ C^{self.b_:.4f}"
            + (f"; {n_out} vertex(es) outside the sampled range" if n_out else "")
        )
        return self

    def _optimal_loss(self, C):
        if self.loss_law_ is not None and self.loss_law_.success_:
            return self.loss_law_.predict(C)
        return np.full(C.size, np.nan)


def isoflop_fit(frame: pd.DataFrame, **kw) -> IsoFLOPFit:
    return IsoFLOPFit(**kw).fit(frame)


class EnvelopeFit(_AllocationFit):
    """Approach 1 estimator. fit(points) with columns n_params, flops, loss (and run_id, tokens).

    Final points (one row per run, the default input): the compute frontier, the runs no
    cheaper run beats, is the envelope; it is valid for any schedule, since a run's final loss
    is the loss of a run of that length. Curves (several rows per run): the lower envelope of
    the interpolated curves on a log-FLOP grid, as Chinchilla did with many schedules; pass
    curves only when intermediate points are valid (WSD cooldowns, constant learning rate):
    intermediate points of a cosine run lie above the loss a run of that length reaches.

    Fitted: envelope_ (flops, loss, n_params, tokens), a_, b_, k_n_, k_d_, n_points_ (runs),
    success_, message_, result_ (FitResult).
    """

    law = "envelope"

    def __init__(self, *, n_grid: int = 60, min_distinct_n: int = 3):
        self.n_grid = n_grid
        self.min_distinct_n = min_distinct_n

    def fit(self, curves: pd.DataFrame):
        cur = curves[(curves["flops"] > 0) & (curves["loss"] > 0)].copy()
        if "run_id" not in cur.columns:
            cur["run_id"] = np.arange(len(cur))
        nan = float("nan")
        self.a_ = self.b_ = self.k_n_ = self.k_d_ = nan
        self.n_points_ = int(cur["run_id"].nunique())
        final = cur.groupby("run_id").size().max() <= 1 if len(cur) else True
        env = self._frontier(cur) if final else self._envelope(cur)
        if "tokens" not in env or env["tokens"].isna().any():
            env["tokens"] = env["flops"] / (6 * env["n_params"])
        self.envelope_ = env
        what = "frontier of the runs' final points" if final else "envelope of the training curves"
        if env["n_params"].nunique() < self.min_distinct_n:
            self.success_ = False
            self.message_ = (
                f"unidentifiable: the {what} visits {env['n_params'].nunique()} model size(s); "
                f"need >= {self.min_distinct_n}"
            )
            return self
        self.k_n_, self.a_, _ = _powerlaw_ls(env["flops"], env["n_params"])
        self.k_d_, self.b_, _ = _powerlaw_ls(env["flops"], env["tokens"])
        self.success_ = True
        self.message_ = (
            f"{what} over {cur['run_id'].nunique()} runs visits {env['n_params'].nunique()} sizes; "
            f"N_opt ~ C^{self.a_:.4f}"
        )
        return self

    @staticmethod
    def _frontier(cur: pd.DataFrame) -> pd.DataFrame:
        m = lower_envelope(cur["flops"], cur["loss"])
        cols = [c for c in ("flops", "loss", "n_params", "tokens") if c in cur.columns]
        return cur[m].sort_values("flops")[cols].reset_index(drop=True)

    def _envelope(self, cur: pd.DataFrame) -> pd.DataFrame:
        lo, hi = np.log(cur["flops"].min()), np.log(cur["flops"].max())
        grid = np.linspace(lo, hi, self.n_grid)
        best_L = np.full(grid.size, np.inf)
        best_N = np.full(grid.size, np.nan)
        for _, g in cur.groupby("run_id"):
            g = g.sort_values("flops")
            x = np.log(g["flops"].to_numpy(float))
            y = g["loss"].to_numpy(float)
            inside = (grid >= x[0]) & (grid <= x[-1])
            if len(g) == 1:
                inside = np.isclose(grid, x[0], rtol=0, atol=(hi - lo) / self.n_grid / 2)
                val = np.full(inside.sum(), y[0])
            else:
                val = np.interp(grid[inside], x, y)
            better = val < best_L[inside]
            idx = np.flatnonzero(inside)[better]
            best_L[idx] = val[better]
            best_N[idx] = g["n_params"].iloc[0]
        m = np.isfinite(best_L)
        return pd.DataFrame({"flops": np.exp(grid[m]), "loss": best_L[m], "n_params": best_N[m]})


def envelope_fit(curves: pd.DataFrame, **kw) -> EnvelopeFit:
    return EnvelopeFit(**kw).fit(curves)
