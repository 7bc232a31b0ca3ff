"""Data-constrained scaling (Muennighoff et al. 2023): repeated data and excess parameters decay.

    R_D = D/U_D - 1                 (repetitions of the U_D unique tokens beyond the first epoch)
    D'  = U_D + U_D R_D* (1 - exp(-R_D / R_D*))
    U_N = min(N, N_opt(U_D))        (N_opt(U_D) = G (G U_D)^(beta/alpha): the compute-optimal N
                                     whose optimal data is U_D, from the base law's allocation)
    R_N = N/U_N - 1
    N'  = U_N + U_N R_N* (1 - exp(-R_N / R_N*))
    L   = E + A / N'^alpha + B / D'^beta

Constants: the paper prints rounded values (E 1.87, A 521, B 1488, alpha = beta 0.353, R_D*
15.39, R_N* 5.31); with those the formula misses its own reference losses by 0.09%. The
unrounded C4 fit of the paper's notebook (log-space a, b, e below) reproduces both
(L(6.34e9, 242e9, 25e9) = 2.2256441, L(8.67e9, 178e9, 25e9) = 2.2269634).

Fitting R_D*, R_N*: every run counts, single-epoch ones too (a run whose N exceeds N_opt(U_D)
has R_N > 0 and informs R_N*). Each R* is bounded to what the data can identify: above ~10x the
largest observed repetition R the decay term is linear in R/R* and the loss no longer depends
on R*, so the bound is there and a fit that ends on it is flagged. The objective is often flat
in R_D* (the paper says so): the fit reports bootstrap intervals and a `flat` flag per R*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber

from ..result import FitResult
from .chinchilla import ChinchillaFit, allocation_constants, predict_loss

# Muennighoff et al.'s C4 fit, unrounded (notebook values; log-space a, b, e)
MUENNIGHOFF_C4 = {
    "E": float(np.exp(0.6254804)),
    "A": float(np.exp(6.255414)),
    "B": float(np.exp(7.3049974)),
    "alpha": 0.3526596,
    "beta": 0.3526596,
    "R_D_star": 15.387756,
    "R_N_star": 5.309743,
}
MUENNIGHOFF_C4_ROUNDED = {
    "E": 1.87,
    "A": 521.0,
    "B": 1488.0,
    "alpha": 0.353,
    "beta": 0.353,
    "R_D_star": 15.39,
    "R_N_star": 5.31,
}
R_NAMES = ("R_D_star", "R_N_star")


def effective_data(D, U_D, R_D_star):
    D, U = np.asarray(D, float), np.asarray(U_D, float)
    R = np.maximum(D / U - 1.0, 0.0)
    return U + U * _decayed(R, R_D_star)


def _decayed(R, R_star):
    """R* (1 - exp(-R/R*)), which is R itself when R* is infinite (no decay)."""
    if np.isinf(R_star):
        return R
    return R_star * (1.0 - np.exp(-R / R_star))


def optimal_n_for_data(U_D, params):
    """The compute-optimal N whose optimal token count is U_D: N = G (G U_D)^(a/b)."""
    k = allocation_constants(params)
    return k["G"] * (k["G"] * np.asarray(U_D, float)) ** (k["a"] / k["b"])


def repetitions(N, D, U_D, params):
    """(R_D, R_N): data repetitions beyond one epoch, and excess-parameter ratio N/U_N - 1."""
    N, D, U = (np.asarray(v, float) for v in (N, D, U_D))
    U_N = np.minimum(N, optimal_n_for_data(U, params))
    return np.maximum(D / U - 1.0, 0.0), np.maximum(N / U_N - 1.0, 0.0)


def effective_params(N, U_D, params, R_N_star):
    N = np.asarray(N, float)
    U_N = np.minimum(N, optimal_n_for_data(U_D, params))
    R = np.maximum(N / U_N - 1.0, 0.0)
    return U_N + U_N * _decayed(R, R_N_star)


def data_constrained_loss(N, D, U_D, params=None):
    """Muennighoff's L(N, D, U_D); params default to the unrounded C4 fit."""
    p = dict(MUENNIGHOFF_C4 if params is None else params)
    Np = effective_params(N, U_D, p, p["R_N_star"])
    Dp = effective_data(D, U_D, p["R_D_star"])
    return predict_loss(p, Np, Dp)


# ----------------------------------------------------------------------------- fitting
def _huber_sum(r, delta):
    return float(np.sum(huber(delta, r)))


def identifiable_bounds(R_D, R_N, factor: float = 10.0):
    """log-space bounds per R*: [log 0.01, log(factor * max observed R)], None if no run repeats."""
    out = {}
    for name, R in zip(R_NAMES, (R_D, R_N)):
        m = float(np.max(R)) if np.size(R) else 0.0
        out[name] = (np.log(1e-2), np.log(factor * m)) if m > 0 else None
    return out


class DataConstrainedFit:
    """Fit R_D* and R_N* on all runs, given a base law (E, A, B, alpha, beta).

    fit(frame) needs columns n_params, tokens, unique_tokens, loss. Without base_params the
    base law is fitted (Approach 3, free form) on the single-epoch runs. n_bootstrap > 0 adds
    95% intervals (resampling runs). Fitted: R_D_star_, R_N_star_, params_, objective_,
    success_, message_, flat_ ({R*: bool}), at_bound_, ci95_, result_ (FitResult).
    """

    def __init__(
        self,
        *,
        base_params: dict | None = None,
        delta: float = 1e-3,
        n_bootstrap: int = 0,
        seed: int = 0,
        flat_rtol: float = 1e-3,
    ):
        self.base_params = base_params
        self.delta = delta
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.flat_rtol = flat_rtol

    def fit(self, frame: pd.DataFrame):
        df = frame[["n_params", "tokens", "unique_tokens", "loss"]].astype(float)
        base, why = self._base(df)
        if base is None:
            return self._fail(why, len(df))
        self.base_params_ = base
        N, D, U, L = (df[c].to_numpy(float) for c in ("n_params", "tokens", "unique_tokens", "loss"))
        R_D, R_N = repetitions(N, D, U, base)
        self.bounds_ = identifiable_bounds(R_D, R_N)
        free = [k for k in R_NAMES if self.bounds_[k] is not None]
        if not free:
            return self._fail(
                "unidentifiable: no run repeats data or exceeds N_opt(U_D); "
                "R_D* and R_N* need runs with D > U_D or N > N_opt(U_D)",
                len(df),
            )
        x, f = self._optimise(N, D, U, L, free, np.ones(len(df)))
        if self.base_params is None:  # the single-epoch fit is biased by excess parameters:
            x, f = self._joint(N, D, U, L, free, x)  # refine base law and R* together
        self._set(x, f, free, N, D, U, L)
        if self.n_bootstrap:
            self._bootstrap(N, D, U, L, free, x)
        self.result_ = self._result(len(df))
        return self

    def _base(self, df):
        if self.base_params is not None:
            return dict(self.base_params), None
        one = df[df["tokens"] <= df["unique_tokens"] * (1 + 1e-9)]
        fit = ChinchillaFit().fit(one["n_params"], one["tokens"], one["loss"])
        if not fit.success_:
            return None, (
                f"base law from the {len(one)} single-epoch runs failed: {fit.message_}"
                " (pass base parameters, or add single-epoch runs)"
            )
        return dict(fit.params_), None

    def _objective(self, N, D, U, L, free, w):
        lL = np.log(L)

        def obj(x):
            p = {**self.base_params_, "R_D_star": np.inf, "R_N_star": np.inf}
            for k, v in zip(free, x):
                p[k] = float(np.exp(v))
            with np.errstate(over="ignore", invalid="ignore"):
                r = np.log(data_constrained_loss(N, D, U, p)) - lL
            return _huber_sum(r * np.sqrt(w), self.delta) if np.all(np.isfinite(r)) else np.inf

        return obj

    def _optimise(self, N, D, U, L, free, w, starts=None):
        obj = self._objective(N, D, U, L, free, w)
        bnds = [self.bounds_[k] for k in free]
        if starts is None:
            grids = [
                np.linspace(lo + 0.5, hi - 0.5, 4) if hi - lo > 1 else [0.5 * (lo + hi)] for lo, hi in bnds
            ]
            starts = [np.array(s) for s in np.array(np.meshgrid(*grids)).reshape(len(free), -1).T]
        best = min(
            (
                minimize(
                    obj,
                    s,
                    method="L-BFGS-B",
                    bounds=bnds,
                    options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000},
                )
                for s in starts
            ),
            key=lambda r: r.fun,
        )
        return best.x, float(best.fun)

    def _joint(self, N, D, U, L, free, x_r):
        """All parameters at once (log E, log A, log B, alpha, beta, log R*), from the two-step
        estimate; R* stay within their bounds. Updates base_params_."""
        keys = ("E", "A", "B")
        b = self.base_params_
        x0 = np.r_[[np.log(b[k]) for k in keys], b["alpha"], b["beta"], x_r]
        lL = np.log(L)

        def obj(x):
            p = {
                "E": np.exp(x[0]),
                "A": np.exp(x[1]),
                "B": np.exp(x[2]),
                "alpha": x[3],
                "beta": x[4],
                "R_D_star": np.inf,
                "R_N_star": np.inf,
            }
            for k, v in zip(free, x[5:]):
                p[k] = float(np.exp(v))
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                r = np.log(data_constrained_loss(N, D, U, p)) - lL
            return _huber_sum(r, self.delta) if np.all(np.isfinite(r)) else np.inf

        bnds = [(None, None)] * 3 + [(1e-3, 5.0)] * 2 + [self.bounds_[k] for k in free]
        res = minimize(
            obj,
            x0,
            method="L-BFGS-B",
            bounds=bnds,
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000, "maxfun": 50000},
        )
        if not res.fun < obj(x0):
            return x_r, float(obj(x0))
        x = res.x
        self.base_params_ = {
            "E": float(np.exp(x[0])),
            "A": float(np.exp(x[1])),
            "B": float(np.exp(x[2])),
            "alpha": float(x[3]),
            "beta": float(x[4]),
        }
        return x[5:], float(res.fun)

    def _set(self, x, f, free, N, D, U, L):
        vals = dict(zip(free, np.exp(x)))
        self.R_D_star_ = float(vals.get("R_D_star", np.inf))
        self.R_N_star_ = float(vals.get("R_N_star", np.inf))
        self.params_ = {**self.base_params_, "R_D_star": self.R_D_star_, "R_N_star": self.R_N_star_}
        self.objective_ = f
        obj = self._objective(N, D, U, L, free, np.ones(N.size))
        self.flat_, self.at_bound_ = {}, {}
        for i, k in enumerate(free):
            lo, hi = self.bounds_[k]
            self.at_bound_[k] = bool(min(x[i] - lo, hi - x[i]) < 1e-3)
            rise = min(obj(x + np.eye(len(x))[i] * s) for s in (np.log(2), -np.log(2))) - f
            self.flat_[k] = bool(rise <= self.flat_rtol * max(f, 1e-300))
        for k in R_NAMES:
            self.flat_.setdefault(k, True)
            self.at_bound_.setdefault(k, False)
        self.one_sided_ = {k: self._one_sided(k, x, free, N, D, U, L) for k in free if self.at_bound_[k]}
        msgs = []
        for k in R_NAMES:
            if k not in free:
                msgs.append(
                    f"{k} not identifiable: no run has {'D > U_D' if k == 'R_D_star' else 'N > N_opt(U_D)'}"
                )
            elif self.at_bound_[k]:
                side, v = self.one_sided_[k]
                msgs.append(
                    f"{k} {side} {v:.3g}: the fit ends at the bound of what the data identify "
                    f"({np.exp(self.bounds_[k][0]):.3g}..{np.exp(self.bounds_[k][1]):.3g}), so the data "
                    f"give a one-sided bound, not a value"
                )
            elif self.flat_[k]:
                msgs.append(
                    f"objective is flat in {k}: halving or doubling it changes the "
                    f"objective by < {self.flat_rtol:.0e} (relative); read its interval"
                )
        # usable when both R* have runs that inform them; one at its bound is a one-sided bound
        self.success_ = len(free) == 2
        self.identifiable_ = self.success_ and not any(self.at_bound_.values())
        self.message_ = "; ".join(msgs) or "R_D* and R_N* identified"
        self.ci95_ = {}

    def _one_sided(self, k, x, free, N, D, U, L) -> tuple[str, float]:
        """('>', v) when R* sits at its upper bound (no decay seen: R* >= v fits within the
        flat tolerance), ('<', v) at its lower bound. v: the farthest value from the bound, in
        steps of 2x, whose objective is within flat_rtol of the optimum's (floor: 1e-8 per run,
        about 1e-4 of log loss each, for noise-free data)."""
        i = free.index(k)
        lo, hi = self.bounds_[k]
        upper = hi - x[i] < 1e-3
        obj = self._objective(N, D, U, L, free, np.ones(N.size))
        f0 = obj(x)
        v = x[i]
        for _ in range(60):
            step = v - np.log(2.0) if upper else v + np.log(2.0)
            if not lo <= step <= hi:
                break
            xt = x.copy()
            xt[i] = step
            if obj(xt) - f0 > self.flat_rtol * max(f0, 1e-8 * N.size):
                break
            v = step
        return (">" if upper else "<"), float(np.exp(v))

    def _bootstrap(self, N, D, U, L, free, x0):
        rng = np.random.default_rng(self.seed)
        rows = []
        for _ in range(self.n_bootstrap):
            w = np.bincount(rng.integers(0, N.size, N.size), minlength=N.size).astype(float)
            x, _ = self._optimise(N, D, U, L, free, w, starts=[x0])
            rows.append(np.exp(x))
        S = np.array(rows)
        self.bootstrap_samples_ = pd.DataFrame(S, columns=free)
        self.ci95_ = {
            k: (float(np.percentile(S[:, i], 2.5)), float(np.percentile(S[:, i], 97.5)))
            for i, k in enumerate(free)
        }

    def _fail(self, message, n):
        nan = float("nan")
        self.success_ = False
        self.identifiable_ = False
        self.one_sided_ = {}
        self.R_D_star_ = self.R_N_star_ = nan
        self.params_ = {**(self.base_params or {}), "R_D_star": nan, "R_N_star": nan}
        self.objective_, self.message_, self.ci95_ = nan, message, {}
        self.flat_, self.at_bound_ = {}, {}
        self.result_ = FitResult.failure("constrained", message, n, tuple(self.params_))
        return self

    def _result(self, n):
        ci = dict(self.ci95_)
        for k, (side, v) in self.one_sided_.items():
            ci[k] = (v, float("inf")) if side == ">" else (0.0, v)
        return FitResult(
            law="constrained",
            params=dict(self.params_),
            objective=self.objective_,
            success=self.success_,
            converged=True,
            identifiable=self.identifiable_,
            message=self.message_,
            n_points=n,
            ci95=ci,
            extra={
                "flat": dict(self.flat_),
                "at_bound": dict(self.at_bound_),
                "identified": {k: not self.at_bound_.get(k, True) for k in R_NAMES},
                "one_sided": {k: f"{k} {side} {v:.3g}" for k, (side, v) in self.one_sided_.items()},
                "base_law": "given" if self.base_params is not None else "fitted",
                "bounds": {
                    k: (None if b is None else [float(np.exp(b[0])), float(np.exp(b[1]))])
                    for k, b in self.bounds_.items()
                },
            },
        )

    def predict(self, N, D, U_D):
        return data_constrained_loss(N, D, U_D, self.params_)


def fit_constrained_points(points, *, n_bootstrap: int = 200, seed: int = 0):
    """The data-constrained fit of a study's points when runs repeat data (a column
    unique_tokens, or epochs), else None. Returns the fitted DataConstrainedFit with `frame_`
    (the runs it used)."""
    f = points.frame
    if "unique_tokens" in f:
        U = pd.to_numeric(f["unique_tokens"], errors="coerce").to_numpy(float)
    elif "epochs" in f:
        U = f["tokens"].to_numpy(float) / pd.to_numeric(f["epochs"], errors="coerce").to_numpy(float)
    else:
        return None
    ok = np.isfinite(U) & (U > 0)
    if not np.any(f["tokens"].to_numpy(float)[ok] > U[ok] * (1 + 1e-9)):
        return None
    df = pd.DataFrame({"n_params": points.N, "tokens": points.D, "unique_tokens": U, "loss": points.loss})[ok]
    fit = DataConstrainedFit(n_bootstrap=n_bootstrap, seed=seed).fit(df)
    fit.frame_ = df
    return fit
