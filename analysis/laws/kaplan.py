"""Kaplan-style single-variable power laws and the compute frontier.

L(x) = E + (x_c / x)^alpha   (irreducible=True)      or   L(x) = (x_c / x)^alpha   (False)

for x = N (Kaplan's L(N)), x = D (L(D)) or x = C on the compute frontier (L(C) = a·C^b + c with
a = x_c^alpha, b = -alpha, c = E). Fitted the same robust way as Approach 3: Huber (delta=1e-3)
on log loss, log L^ = LSE(log E, alpha·log x_c − alpha·log x), batched L-BFGS from a grid of
starts, then a tight scipy polish and the same convergence check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber

from .._optim import batched_lbfgs
from ..result import FitResult, estimator_result

DEFAULT_DELTA = 1e-3


def _fg(T, lx, lL, delta, irreducible, W=None):
    """T rows (e, k, alpha) [irreducible] or (k, alpha); prediction LSE(e, k - alpha lx)."""
    if irreducible:
        e, k, al = T[:, 0:1], T[:, 1:2], T[:, 2:3]
        t1 = k - al * lx
        mx = np.maximum(t1, e)
        e1, e2 = np.exp(t1 - mx), np.exp(e - mx)
        s = e1 + e2
        pred = mx + np.log(s)
    else:
        k, al = T[:, 0:1], T[:, 1:2]
        pred = k - al * lx
    r = pred - lL
    h = huber(delta, r)
    dh = np.clip(r, -delta, delta)
    if W is not None:
        h, dh = h * W, dh * W
    f = h.sum(axis=1)
    if irreducible:
        q = dh / s
        g1, g2 = q * e1, q * e2
        g = np.stack([g2.sum(1), g1.sum(1), -(g1 @ lx)], axis=1)
    else:
        g = np.stack([dh.sum(1), -(dh @ lx)], axis=1)
    f[~np.isfinite(f)] = np.inf
    return f, g


class PowerLawFit:
    """L(x) = E + (x_c/x)^alpha, estimator style.

    variable: a label ("N", "D" or "C") used in messages and reports. Fitted attributes:
    params_ ({"E", "x_c", "alpha"}; E = 0 when irreducible=False), E_, x_c_, alpha_,
    coef_ (a in a·x^b + c), exponent_ (b = -alpha), objective_, converged_, success_,
    identifiable_, message_, n_points_.
    """

    def __init__(self, *, variable: str = "x", irreducible: bool = True, delta: float = DEFAULT_DELTA):
        self.variable = variable
        self.irreducible = irreducible
        self.delta = delta

    def _fail(self, msg, n):
        nan = float("nan")
        self.params_ = {"E": nan, "x_c": nan, "alpha": nan}
        self.E_ = self.x_c_ = self.alpha_ = self.coef_ = self.exponent_ = nan
        self.objective_ = nan
        self.converged_ = self.success_ = self.identifiable_ = False
        self.message_ = msg
        self.n_points_ = n
        return self

    def fit(self, x, loss, *, sample_weight=None):
        x = np.asarray(x, float).ravel()
        L = np.asarray(loss, float).ravel()
        n_par = 3 if self.irreducible else 2
        if x.shape != L.shape:
            return self._fail("unidentifiable: x and loss differ in length", x.size)
        bad = ~np.isfinite(x) | ~np.isfinite(L) | (x <= 0) | (L <= 0)
        if bad.any():
            return self._fail(f"unidentifiable: {int(bad.sum())} non-positive or non-finite values", x.size)
        if x.size <= n_par:
            return self._fail(f"unidentifiable: {x.size} points for {n_par} parameters", x.size)
        if np.unique(np.round(np.log(x), 9)).size < n_par:
            return self._fail(f"unidentifiable: fewer than {n_par} distinct {self.variable} values", x.size)
        lx, lL = np.log(x), np.log(L)
        W = None if sample_weight is None else np.asarray(sample_weight, float)
        xm, Lm = np.median(lx), np.median(L)
        starts = []
        for al in (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5):
            if self.irreducible:
                for frac in (0.0, 0.3, 0.6, 0.8, 0.95):
                    E0 = max(frac * L.min(), 1e-3)
                    k = np.log(max(Lm - E0, 0.02 * Lm)) + al * xm
                    starts.append((np.log(E0), k, al))
            else:
                starts.append((np.log(Lm) + al * xm, al))
        starts = np.array(starts)
        fg = lambda X, rows: _fg(X, lx, lL, self.delta, self.irreducible, W)  # noqa: E731
        br = batched_lbfgs(fg, starts, maxiter=500, gtol=1e-12, ftol=1e-12)
        best = br.x[np.argmin(br.fun)]

        def fun(t):
            f, g = _fg(t[None], lx, lL, self.delta, self.irreducible, W)
            return float(f[0]), g[0]

        res = minimize(
            fun, best, jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000}
        )
        th = res.x if res.fun <= fun(best)[0] else best
        f0 = fun(th)[0]
        res2 = minimize(
            fun, th, jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000}
        )
        drop = (f0 - min(res2.fun, f0)) / max(f0, 1e-300)
        if self.irreducible:
            e, k, al = th
            E = float(np.exp(e))
        else:
            k, al = th
            E = 0.0
        self.alpha_ = float(al)
        self.E_ = E
        self.x_c_ = float(np.exp(k / al)) if al != 0 else float("nan")
        self.coef_ = float(np.exp(k))  # a in a·x^b + c
        self.exponent_ = -float(al)  # b
        self.params_ = {"E": self.E_, "x_c": self.x_c_, "alpha": self.alpha_}
        self.theta_ = th
        self.objective_ = float(f0)
        self.n_points_ = x.size
        self.identifiable_ = True
        self.converged_ = bool(drop <= 1e-6)
        self.success_ = bool(self.converged_ and al > 0 and np.isfinite(self.x_c_))
        msgs = ["converged" if self.converged_ else f"NOT converged (polish lowers objective by {drop:.2%})"]
        if not al > 0:
            msgs.append(f"non-positive exponent alpha={al:.3g}: loss does not fall with {self.variable}")
        if self.irreducible and E < 1e-3 * L.min():
            msgs.append("irreducible term collapsed to ~0 (pure power law fits as well)")
        self.message_ = "; ".join(msgs)
        return self

    @property
    def result_(self) -> FitResult:
        """This fit as a FitResult; exponents.a is the loss exponent -alpha, b is None."""
        law = {"N": "kaplan-n", "D": "kaplan-d", "C": "compute"}.get(self.variable, f"power-{self.variable}")
        return estimator_result(
            self,
            law,
            getattr(self, "params_", {}),
            exponents={"a": getattr(self, "exponent_", None), "b": None},
        )

    def predict(self, x):
        if not hasattr(self, "params_"):
            raise AttributeError("PowerLawFit is not fitted")
        return self.E_ + self.coef_ * np.asarray(x, float) ** self.exponent_

    def __repr__(self):
        if not hasattr(self, "params_"):
            return f"PowerLawFit(variable={self.variable!r}, irreducible={self.irreducible})"
        return (
            f"<PowerLawFit L({self.variable}) = {self.E_:.4g} + ({self.x_c_:.4g}/{self.variable})"
            f"^{self.alpha_:.4g} converged={self.converged_}>"
        )


def fit_kaplan_n(N, loss, *, irreducible: bool = True, **kw) -> PowerLawFit:
    """Kaplan L(N) (use the study's converged / largest-D runs per N)."""
    return PowerLawFit(variable="N", irreducible=irreducible, **kw).fit(N, loss)


def fit_kaplan_d(D, loss, *, irreducible: bool = True, **kw) -> PowerLawFit:
    """Kaplan L(D) (use the largest-N runs per D)."""
    return PowerLawFit(variable="D", irreducible=irreducible, **kw).fit(D, loss)


def lower_envelope(x, loss) -> np.ndarray:
    """Boolean mask of points on the lower envelope: no point with x' <= x has a lower loss."""
    x = np.asarray(x, float)
    L = np.asarray(loss, float)
    order = np.lexsort((L, x))
    keep = np.zeros(x.size, bool)
    best = np.inf
    for i in order:
        if L[i] < best:
            keep[i] = True
            best = L[i]
    return keep


def frontier_points(points_frame: pd.DataFrame, *, x_col="flops", loss_col="loss") -> pd.DataFrame:
    m = lower_envelope(points_frame[x_col], points_frame[loss_col])
    return points_frame[m].sort_values(x_col)


def fit_compute_frontier(C, loss, *, irreducible: bool = True, **kw) -> PowerLawFit:
    """L(C) = a·C^b + c fitted on the lower envelope of (C, L) (the compute frontier)."""
    C = np.asarray(C, float)
    L = np.asarray(loss, float)
    ok = np.isfinite(C) & np.isfinite(L) & (C > 0) & (L > 0)
    m = np.zeros(C.size, bool)
    m[ok] = lower_envelope(C[ok], L[ok])
    fit = PowerLawFit(variable="C", irreducible=irreducible, **kw).fit(C[m], L[m])
    fit.frontier_mask_ = m
    return fit


def kaplan_per_variable(frame: pd.DataFrame, variable: str) -> pd.DataFrame:
    """The points a single-variable law should see: for L(N), the lowest loss per N (the
    longest-trained run); for L(D), the lowest loss per D (the largest model)."""
    col = {"N": "n_params", "D": "tokens"}[variable]
    idx = frame.groupby(col)["loss"].idxmin()
    return frame.loc[idx].sort_values(col)
