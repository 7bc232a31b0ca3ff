"""Chinchilla Approach 3: L(N, D) = E + A/N^alpha + B/D^beta, and compute-optimal allocation.

The fit follows Hoffmann et al. (2022) as repaired by Besiroglu et al. (2024, Epoch AI):
parameters theta = (e, a, b, alpha, beta) with E = exp(e), A = exp(a), B = exp(b);
prediction in log space by log-sum-exp, log L^ = LSE(a - alpha log N, b - beta log D, e);
objective = SUM over points of Huber_delta(log L^ - log L), delta = 1e-3.

Speed: the 4500-start grid (alpha, beta in {0, .5, .., 2}, e in {-1, -.5, .., 1},
a, b in {0, 5, .., 25}) is minimised all at once by a batched L-BFGS (`_optim.batched_lbfgs`),
then the best few distinct candidates are polished with scipy's L-BFGS-B at tight tolerances.

Convergence: Chinchilla's own fit stopped early (scipy's default ftol stops L-BFGS-B near
Chinchilla's published values with the objective 14% above the optimum). `check_convergence`
rejects such a point: the gradient must be small AND a tight-tolerance polish started from it
must not lower the objective materially. A fit that fails the check reports converged_=False.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from .._optim import staged_lbfgs
from ..result import FitResult, estimator_result
from .identify import (
    CONVERGED_RTOL,
    THETA_NAMES,
    flat_message,
    flat_parameters,
    log_loss_jacobian,
    relative_drop,
)

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
CHINCHILLA_PUBLISHED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
EPOCH_REPLICATION = {"E": 1.8172, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3658}
DEFAULT_DELTA = 1e-3


# ----------------------------------------------------------------------------- parameters
def params_to_theta(params) -> np.ndarray:
    """{E, A, B, alpha, beta} (or that sequence) -> theta = (log E, log A, log B, alpha, beta)."""
    if isinstance(params, dict):
        params = [params[k] for k in PARAM_NAMES]
    E, A, B, al, be = (float(v) for v in params)
    return np.array([np.log(E), np.log(A), np.log(B), al, be])


def theta_to_params(theta) -> dict[str, float]:
    e, a, b, al, be = (float(v) for v in theta)
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": al, "beta": be}


def coarse_grid() -> np.ndarray:
    """A 4-per-axis grid (1024 starts) for small subsets, e.g. one MoE configuration."""
    v = np.array([0.1, 0.4, 0.8, 1.5])
    e = np.array([-1.0, -0.3, 0.3, 1.0])
    ab = np.array([0.0, 5.0, 12.0, 20.0])
    return np.array([(ei, ai, bi, ali, bei) for ali, bei, ei, ai, bi in itertools.product(v, v, e, ab, ab)])


def hoffmann_grid() -> np.ndarray:
    """The 4500 starts of Hoffmann et al., as theta rows (e, a, b, alpha, beta)."""
    al = np.arange(0.0, 2.0 + 1e-9, 0.5)
    be = np.arange(0.0, 2.0 + 1e-9, 0.5)
    e = np.arange(-1.0, 1.0 + 1e-9, 0.5)
    a = np.arange(0.0, 25.0 + 1e-9, 5.0)
    b = np.arange(0.0, 25.0 + 1e-9, 5.0)
    return np.array([(ei, ai, bi, ali, bei) for ali, bei, ei, ai, bi in itertools.product(al, be, e, a, b)])


# ----------------------------------------------------------------------------- objective
_CHUNK_ELEMS = 1 << 16  # rows x points per block: keeps the temporaries in cache (4-5x faster)


def _fg_batch(
    T: np.ndarray, lN: np.ndarray, lD: np.ndarray, lL: np.ndarray, delta: float, W: np.ndarray | None = None
):
    """Summed Huber objective and gradient for many thetas at once.

    T: (S, 5) thetas; lN, lD, lL: (P,) logs; W: None, (P,) or (S, P) point weights
    (bootstrap counts). Returns f (S,), g (S, 5).
    """
    S, P = T.shape[0], lN.size
    rows = max(1, _CHUNK_ELEMS // max(P, 1))
    if S <= rows:
        return _fg_block(T, lN, lD, lL, delta, W)
    f = np.empty(S)
    g = np.empty((S, 5))
    per_row_w = W is not None and np.ndim(W) == 2
    for i in range(0, S, rows):
        sl = slice(i, i + rows)
        f[sl], g[sl] = _fg_block(T[sl], lN, lD, lL, delta, W[sl] if per_row_w and W is not None else W)
    return f, g


def _fg_block(T, lN, lD, lL, delta, W):
    # in-place numpy on (S, P) blocks: about 25 passes over memory per evaluation
    e, a, b, al, be = (T[:, i : i + 1] for i in range(5))
    e1 = np.multiply(-al, lN)  # (S, P): t1 = a - alpha log N
    e1 += a
    e2 = np.multiply(-be, lD)  # t2 = b - beta log D
    e2 += b
    mx = np.maximum(e1, e2)
    np.maximum(mx, e, out=mx)  # max(t1, t2, e) for a stable log-sum-exp
    e1 -= mx
    np.exp(e1, out=e1)
    e2 -= mx
    np.exp(e2, out=e2)
    e3 = np.subtract(e, mx)
    np.exp(e3, out=e3)
    s = e1 + e2
    s += e3
    r = np.log(s)
    r += mx
    r -= lL  # residual in log loss
    dh = np.clip(r, -delta, delta)  # Huber derivative
    r -= 0.5 * dh
    r *= dh  # Huber value: dh * (r - dh/2) in both regimes
    if W is not None:
        r *= W
        dh *= W
    f = r.sum(axis=1)
    dh /= s  # d/d logsumexp scaled; times softmax weights below
    e1 *= dh
    e2 *= dh
    e3 *= dh
    g = np.empty((T.shape[0], 5))
    g[:, 0] = e3.sum(axis=1)
    g[:, 1] = e1.sum(axis=1)
    g[:, 2] = e2.sum(axis=1)
    g[:, 3] = -(e1 @ lN)
    g[:, 4] = -(e2 @ lD)
    bad = ~np.isfinite(f)
    if bad.any():
        f[bad] = np.inf
    return f, g


def huber_objective(params, N, D, loss, *, delta: float = DEFAULT_DELTA, weights=None) -> float:
    """Summed Huber_delta of log-residuals at `params` ({E, A, B, alpha, beta})."""
    lN, lD, lL = np.log(np.asarray(N, float)), np.log(np.asarray(D, float)), np.log(np.asarray(loss, float))
    W = None if weights is None else np.asarray(weights, float)
    f, _ = _fg_batch(params_to_theta(params)[None, :], lN, lD, lL, delta, W)
    return float(f[0])


def predict_loss(params, N, D):
    """E + A/N^alpha + B/D^beta (elementwise, broadcasting)."""
    p = params if isinstance(params, dict) else theta_to_params(params)
    N = np.asarray(N, float)
    D = np.asarray(D, float)
    return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


def _polish(theta0, lN, lD, lL, delta, W=None, *, maxiter=20000):
    """scipy L-BFGS-B at tight tolerances from theta0 (analytic gradient)."""

    def fun(x):
        f, g = _fg_batch(x[None, :], lN, lD, lL, delta, W)
        return float(f[0]), g[0]

    return minimize(
        fun,
        np.asarray(theta0, float),
        jac=True,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": maxiter, "maxcor": 20},
    )


@dataclass
class ConvergenceReport:
    converged: bool
    objective: float
    polished_objective: float
    grad_norm: float  # max-abs gradient in theta space, relative to the objective
    message: str
    polished_theta: np.ndarray | None = field(repr=False, default=None)


def check_convergence(
    params,
    N,
    D,
    loss,
    *,
    delta: float = DEFAULT_DELTA,
    weights=None,
    rtol: float = CONVERGED_RTOL,
    gtol: float | None = None,
) -> ConvergenceReport:
    """Is `params` a genuine local optimum of the summed Huber objective?

    A tight-tolerance L-BFGS-B polish from `params` must lower the objective by less than
    rtol (relative: 1e-9 by default). An optimiser that stopped early (e.g. scipy defaults
    started at Chinchilla's published values) fails it: the polish lowers the objective by
    14%. With `gtol`, the relative gradient (theta space, over the objective) must also be
    below it; by default it is reported only, since at a well-polished optimum of a sum of
    Huber terms it can stay large without the objective moving.
    """
    lN, lD, lL = np.log(np.asarray(N, float)), np.log(np.asarray(D, float)), np.log(np.asarray(loss, float))
    W = None if weights is None else np.asarray(weights, float)
    theta = params_to_theta(params)
    f, g = _fg_batch(theta[None, :], lN, lD, lL, delta, W)
    f0 = float(f[0])
    # floors for (near) noise-free data where f0 -> 0: residuals of 1e-9 in log loss count as
    # exact (the gradient is then at most 1e-9 * P * max|log x|, the objective 0.5e-18 * P)
    P = np.size(lL)
    gscale = max(abs(f0), 1e-9 * P * float(max(np.max(np.abs(lN)), np.max(np.abs(lD)))))
    res = _polish(theta, lN, lD, lL, delta, W)
    f1 = float(min(res.fun, f0))
    if res.fun < f0:  # the gradient that matters is the one at the returned optimum
        g = _fg_batch(np.asarray(res.x, float)[None, :], lN, lD, lL, delta, W)[1]
    gn = float(np.max(np.abs(g[0]))) / gscale
    drop = relative_drop(f0, f1, 0.5e-18 * P)
    ok_drop = drop < rtol
    ok_grad = gtol is None or gn <= gtol
    if ok_drop and ok_grad:
        msg = (
            f"converged: a tight polish lowers the objective by {drop:.1e} (relative, < {rtol:g}); "
            f"relative gradient {gn:.2e}"
        )
    else:
        why = []
        if not ok_grad:
            why.append(f"relative gradient {gn:.2e} > {gtol:g}")
        if not ok_drop:
            why.append(
                f"a tight polish lowers the objective from {f0:.6g} to {f1:.6g} "
                f"({drop:.2%}): the optimiser stopped early"
            )
        msg = "NOT converged: " + "; ".join(why)
    return ConvergenceReport(bool(ok_drop and ok_grad), f0, f1, gn, msg, res.x if res.fun < f0 else theta)


# ----------------------------------------------------------------------------- allocation
def allocation_constants(params) -> dict[str, float]:
    """G and the exponents a = beta/(alpha+beta), b = alpha/(alpha+beta) of N_opt, D_opt ~ C^a, C^b."""
    p = params if isinstance(params, dict) else theta_to_params(params)
    al, be, A, B = p["alpha"], p["beta"], p["A"], p["B"]
    G = (al * A / (be * B)) ** (1.0 / (al + be))
    return {"G": G, "a": be / (al + be), "b": al / (al + be)}


def compute_optimal(params, flops) -> pd.DataFrame:
    """For each budget C: N_opt = G (C/6)^a, D_opt = (C/6)^b / G, D/N and the predicted loss.

    Uses C = 6 N D (the convention of Hoffmann's allocation formula).
    """
    p = params if isinstance(params, dict) else theta_to_params(params)
    C = np.atleast_1d(np.asarray(flops, float))
    k = allocation_constants(p)
    N = k["G"] * (C / 6.0) ** k["a"]
    D = (C / 6.0) ** k["b"] / k["G"]
    return pd.DataFrame(
        {"flops": C, "n_params": N, "tokens": D, "tokens_per_param": D / N, "loss": predict_loss(p, N, D)}
    )


# ----------------------------------------------------------------------------- estimator
def _validate_points(N, D, loss, n_params: int = 5):
    """Return (arrays, problem message or None). Problems make the fit unidentifiable."""
    N = np.asarray(N, float).ravel()
    D = np.asarray(D, float).ravel()
    L = np.asarray(loss, float).ravel()
    if not (N.shape == D.shape == L.shape):
        return (N, D, L), f"N, D and loss have different lengths ({N.size}, {D.size}, {L.size})"
    for name, v in (("N", N), ("D", D), ("loss", L)):
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            return (N, D, L), f"{int(bad.sum())} non-positive or non-finite value(s) in {name}"
    if N.size <= n_params:
        return (N, D, L), f"{N.size} points for {n_params} parameters: need more points than parameters"
    if np.unique(np.round(np.log(N), 9)).size < 2:
        return (N, D, L), "a single model size: alpha and A are unidentifiable (need >= 2 distinct N)"
    if np.unique(np.round(np.log(D), 9)).size < 2:
        return (N, D, L), "a single token count: beta and B are unidentifiable (need >= 2 distinct D)"
    return (N, D, L), None


class ChinchillaFit:
    """Approach 3 estimator (scikit-learn style).

    >>> fit = ChinchillaFit().fit(N, D, loss)
    >>> fit.params_, fit.converged_, fit.predict(7e10, 1.4e12), fit.compute_optimal([1e21])

    Parameters (keyword-only, stored as given): delta (Huber), grid ("hoffmann" or an (S, 5)
    theta array, columns log E, log A, log B, alpha, beta), n_polish (distinct best starts
    polished with scipy; grid="coarse" is a 1024-start grid for small subsets), maxiter (batched L-BFGS iterations).

    Fitted attributes: params_ (dict E, A, B, alpha, beta), E_, A_, B_, alpha_, beta_, theta_,
    objective_, converged_ (convergence check passed), success_ (parameters are usable),
    identifiable_, message_, convergence_ (ConvergenceReport), n_points_, n_starts_,
    grid_objectives_ (final objective of every start), exponents_ ({"a", "b"}), G_.
    A failed fit sets success_=False and a message_; it never raises on bad data.
    """

    def __init__(
        self, *, delta: float = DEFAULT_DELTA, grid="hoffmann", n_polish: int = 6, maxiter: int = 300
    ):
        self.delta = delta
        self.grid = grid
        self.n_polish = n_polish
        self.maxiter = maxiter

    # -- helpers
    def _starts(self):
        if isinstance(self.grid, str):
            if self.grid not in ("hoffmann", "coarse"):
                raise ValueError(f"grid must be 'hoffmann', 'coarse' or an (S, 5) array, got {self.grid!r}")
            return hoffmann_grid() if self.grid == "hoffmann" else coarse_grid()
        g = np.atleast_2d(np.asarray(self.grid, float))
        if g.shape[1] != 5:
            raise ValueError(f"grid must have 5 columns (log E, log A, log B, alpha, beta), got {g.shape}")
        return g

    def _fail(self, message, n):
        nan = float("nan")
        self.params_ = dict.fromkeys(PARAM_NAMES, nan)
        self.theta_ = np.full(5, nan)
        self.E_ = self.A_ = self.B_ = self.alpha_ = self.beta_ = nan
        self.objective_ = nan
        self.converged_ = False
        self.success_ = False
        self.identifiable_ = False
        self.message_ = message
        self.convergence_ = None
        self.n_points_ = n
        self.n_starts_ = 0
        self.grid_objectives_ = np.array([])
        self.exponents_ = {"a": nan, "b": nan}
        self.G_ = nan
        return self

    def fit(self, N, D, loss, *, sample_weight=None):
        if self.delta <= 0:
            raise ValueError("delta must be > 0")
        (N, D, L), problem = _validate_points(N, D, loss)
        if problem is not None:
            return self._fail("unidentifiable: " + problem, N.size)
        lN, lD, lL = np.log(N), np.log(D), np.log(L)
        W = None if sample_weight is None else np.asarray(sample_weight, float)
        starts = self._starts()

        def make_fg(idx):  # objective over the points idx (None: all); see staged_lbfgs
            if idx is None:
                return lambda X, rows: _fg_batch(X, lN, lD, lL, self.delta, W)
            Wi = None if W is None else W[idx]
            return lambda X, rows: _fg_batch(X, lN[idx], lD[idx], lL[idx], self.delta, Wi)

        br = staged_lbfgs(make_fg, starts, N.size, maxiter=self.maxiter, gtol=1e-10, ftol=1e-10)
        self.grid_objectives_ = br.fun
        order = np.argsort(np.where(np.isfinite(br.fun), br.fun, np.inf))
        cands = []
        for i in order:  # best distinct candidates
            if not np.isfinite(br.fun[i]) or br.fun[i] > 1.01 * br.fun[order[0]] + 1e-300:
                break  # a basin 1% worse than the best cannot win a local polish
            if all(np.max(np.abs(br.x[i] - br.x[j])) > 1e-3 for j in cands):
                cands.append(i)
            if len(cands) >= self.n_polish:
                break
        best_theta, best_f = None, np.inf
        for i in cands:
            res = _polish(br.x[i], lN, lD, lL, self.delta, W)
            if res.fun < best_f:
                best_theta, best_f = res.x, float(res.fun)
        self.n_points_ = N.size
        self.n_starts_ = starts.shape[0]
        if best_theta is None:
            self._fail("no start reached a finite objective", N.size)
            self.identifiable_ = True
            return self
        self._set(best_theta, N, D, L, W)
        return self

    def _set(self, theta, N, D, L, W):
        self.theta_ = np.asarray(theta, float)
        for _ in range(3):  # polish until a polish no longer moves the objective (relative)
            self.convergence_ = check_convergence(
                theta_to_params(self.theta_), N, D, L, delta=self.delta, weights=W
            )
            if self.convergence_.polished_objective < self.convergence_.objective:
                self.theta_ = np.asarray(self.convergence_.polished_theta, float)
            if self.convergence_.converged:
                break
        self.params_ = theta_to_params(self.theta_)
        for k, v in self.params_.items():
            setattr(self, f"{k}_", v)
        self.objective_ = float(
            _fg_batch(self.theta_[None], np.log(N), np.log(D), np.log(L), self.delta, W)[0][0]
        )
        self.converged_ = self.convergence_.converged
        flat = flat_parameters(log_loss_jacobian(self.theta_, N, D), THETA_NAMES, weights=W)
        self.identifiable_ = not flat
        problems = []
        if flat:
            problems.append(flat_message(flat, N.size))
        if not (self.alpha_ > 0 and self.beta_ > 0):
            problems.append(f"non-positive exponent (alpha={self.alpha_:.3g}, beta={self.beta_:.3g})")
        self.success_ = bool(np.all(np.isfinite(self.theta_))) and not problems
        self.message_ = "; ".join(problems + [self.convergence_.message])
        k = allocation_constants(self.params_) if self.success_ else {"G": np.nan, "a": np.nan, "b": np.nan}
        self.G_ = k["G"]
        self.exponents_ = {"a": k["a"], "b": k["b"]}

    # -- use
    def predict(self, N, D):
        self._check_fitted()
        return predict_loss(self.params_, N, D)

    def compute_optimal(self, flops) -> pd.DataFrame:
        self._check_fitted()
        return compute_optimal(self.params_, flops)

    def objective(self, N, D, loss) -> float:
        self._check_fitted()
        return huber_objective(self.params_, N, D, loss, delta=self.delta)

    @property
    def result_(self) -> FitResult:
        """This fit as a FitResult (what the CLI, the report and the bootstrap read)."""
        self._check_fitted()
        return estimator_result(self, "chinchilla", self.params_, exponents=self.exponents_)

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise AttributeError("ChinchillaFit is not fitted: call fit(N, D, loss) first")

    def __repr__(self):
        if not hasattr(self, "params_"):
            return f"ChinchillaFit(delta={self.delta})"
        p = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"<ChinchillaFit {p} objective={self.objective_:.6g} converged={self.converged_}>"
