"""Approach 3 law forms with fewer free parameters, and form selection by extrapolation.

With few runs the free five-parameter law L = E + A/N^alpha + B/D^beta can fit the data and
still extrapolate badly (or be unidentifiable: five runs for five parameters). Gadre et al.
(2024) fit four parameters on five runs and predict a 1.4B and a 6.9B model within 0.75%.
The forms here are restrictions of the same law, fitted with the same batched optimiser
(`_optim.batched_lbfgs`) and the same Huber-on-log-loss objective (`chinchilla._fg_batch`),
by the chain rule through a map from the form's own parameters to (log E, log A, log B,
alpha, beta):

    tied      alpha = beta (one exponent for N and D)                         4 parameters
    fixed-e   E given (e.g. a known entropy rate)                             4 parameters
    gadre     Gadre et al.'s over-training law, loss vs compute at fixed      4 parameters
              tokens-per-parameter M = D/N with a shared irreducible term:
              L(N, M) = E + a N^-eta + c 6^(-eta/2) (M N)^-eta
              = the tied law with B = c 6^(-eta/2), fitted as the paper does: least squares
              on the loss itself (its `curve_fit`), not Huber on log loss.

Choosing among the forms (cross-validation over compute) is analysis/selection.py's job;
`refit_batch` here refits one form under many weight vectors at once (bootstrap resamples,
CV folds), warm-started from a full fit, which is what makes that affordable.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

from .._optim import batched_lbfgs, staged_lbfgs
from ..result import FitResult
from .chinchilla import (
    DEFAULT_DELTA,
    ChinchillaFit,
    _fg_batch,
    _validate_points,
    allocation_constants,
    coarse_grid,
    compute_optimal,
    predict_loss,
    theta_to_params,
)
from .identify import CONVERGED_RTOL, flat_message, flat_parameters, log_loss_jacobian, relative_drop

FORMS = ("free", "tied", "fixed-e", "gadre")


# ----------------------------------------------------------------------------- objectives
def _fg_lsq(T, lN, lD, L, W=None):
    """Sum of squared loss residuals (L^ - L)^2 and its gradient in theta = (e, a, b, al, be)."""
    e, a, b, al, be = (T[:, i : i + 1] for i in range(5))
    tN = np.exp(a - al * lN)
    tD = np.exp(b - be * lD)
    tE = np.exp(e)
    r = tE + tN + tD - L
    w = 2.0 * r if W is None else 2.0 * r * W
    f = (r * r).sum(axis=1) if W is None else (r * r * W).sum(axis=1)
    g = np.stack(
        [(w * tE).sum(axis=1), (w * tN).sum(axis=1), (w * tD).sum(axis=1), -(w * tN) @ lN, -(w * tD) @ lD],
        axis=1,
    )
    f = np.where(np.isfinite(f) & np.all(np.isfinite(g), axis=1), f, np.inf)
    return f, g


# ----------------------------------------------------------------------------- forms
class _Form:
    """A restriction of the five-parameter law: free parameters u <-> full theta
    (log E, log A, log B, alpha, beta). `names`: what each free parameter is, for messages."""

    name = "free"
    names: tuple[str, ...] = ("E", "A", "B", "alpha", "beta")

    def expand(self, U):
        return U

    def reduce_grad(self, G):
        return G

    def reduce(self, T):
        """(K, 5) thetas -> (K, n) free parameters (the inverse of expand on its image)."""
        return np.atleast_2d(T)

    def starts(self, coarse: bool = False):
        return coarse_grid() if coarse else ChinchillaFit()._starts()


class _Tied(_Form):
    name = "tied"
    names = ("E", "A", "B", "alpha=beta")

    def expand(self, U):
        return np.column_stack([U, U[:, 3]])

    def reduce_grad(self, G):
        return np.column_stack([G[:, :3], G[:, 3] + G[:, 4]])

    def reduce(self, T):
        T = np.atleast_2d(T)
        return np.column_stack([T[:, :3], 0.5 * (T[:, 3] + T[:, 4])])

    def starts(self, coarse: bool = False):
        ex = np.array([0.1, 0.4, 0.8, 1.5]) if coarse else np.arange(0.0, 2.0 + 1e-9, 0.5)
        e = np.array([-1.0, -0.3, 0.3, 1.0]) if coarse else np.arange(-1.0, 1.0 + 1e-9, 0.5)
        ab = np.array([0.0, 5.0, 12.0, 20.0]) if coarse else np.arange(0.0, 25.0 + 1e-9, 5.0)
        return np.array(list(itertools.product(e, ab, ab, ex)))


class _FixedE(_Form):
    name = "fixed-e"
    names = ("A", "B", "alpha", "beta")

    def __init__(self, E: float):
        self.e = float(np.log(E))

    def expand(self, U):
        return np.column_stack([np.full(U.shape[0], self.e), U])

    def reduce_grad(self, G):
        return G[:, 1:]

    def reduce(self, T):
        return np.atleast_2d(T)[:, 1:]

    def starts(self, coarse: bool = False):
        ex = np.array([0.1, 0.4, 0.8, 1.5]) if coarse else np.arange(0.0, 2.0 + 1e-9, 0.5)
        ab = np.array([0.0, 5.0, 12.0, 20.0]) if coarse else np.arange(0.0, 25.0 + 1e-9, 5.0)
        return np.array(list(itertools.product(ab, ab, ex, ex)))


class _Gadre(_Tied):
    name = "gadre"


def make_form(form: str, fixed_E: float | None = None) -> _Form:
    """The form object for `--form` (free, tied, fixed-e, gadre)."""
    if form == "free":
        return _Form()
    if form == "tied":
        return _Tied()
    if form == "gadre":
        return _Gadre()
    if form == "fixed-e":
        if fixed_E is None or not (np.isfinite(fixed_E) and fixed_E > 0):
            raise ValueError(
                "form 'fixed-e' needs a positive E: pass --fixed-e VALUE "
                "(e.g. the corpus' known entropy rate in nats/token)"
            )
        return _FixedE(fixed_E)
    raise ValueError(f"unknown form {form!r}: choose one of {', '.join(FORMS)}")


def n_free_params(form: str) -> int:
    return 5 if form == "free" else 4


def form_objective(form: _Form, lN, lD, lL, delta: float, W=None):
    """fg(U, rows) over the form's free parameters: Huber on log loss, or least squares on the
    loss for gadre (the paper's curve_fit). W: None, (P,) or (rows, P) weights; `rows` index
    the rows of a 2-D W."""
    per_row = W is not None and np.ndim(W) == 2
    L = np.exp(lL)

    def base(T, rows):
        w = W[rows] if per_row else W
        return _fg_lsq(T, lN, lD, L, w) if form.name == "gadre" else _fg_batch(T, lN, lD, lL, delta, w)

    def fg(U, rows=None):
        F, G = base(form.expand(U), np.arange(U.shape[0]) if rows is None else rows)
        return F, form.reduce_grad(G)

    return fg


# ----------------------------------------------------------------------------- estimator
class FormFit:
    """Approach 3 under one law form (scikit-learn style, `result_` is a FitResult).

    >>> FormFit("tied").fit(N, D, loss).predict(7e9, 1.4e11)
    >>> FormFit("fixed-e", fixed_E=1.75).fit(N, D, loss).result_.params

    grid: "full" (Hoffmann's 4500 starts for free, 900 for the others) or "coarse" (1024 /
    256 starts, for many small fits). Fitted: params_ (E, A, B, alpha, beta; for gadre also
    a, c, eta of the paper's form), theta_, objective_, converged_, identifiable_, success_,
    message_, result_.
    """

    def __init__(
        self,
        form: str = "tied",
        *,
        fixed_E: float | None = None,
        delta: float = DEFAULT_DELTA,
        n_polish: int = 4,
        maxiter: int = 300,
        grid: str = "full",
    ):
        self.form = form
        self.fixed_E = fixed_E
        self.delta = delta
        self.n_polish = n_polish
        self.maxiter = maxiter
        self.grid = grid

    def fit(self, N, D, loss, *, sample_weight=None):
        if self.form == "free":
            return self._fit_free(N, D, loss, sample_weight)
        (N, D, L), problem = _validate_points(N, D, loss, n_free_params(self.form))
        if problem is not None:
            return self._fail("unidentifiable: " + problem, N.size)
        W = None if sample_weight is None else np.asarray(sample_weight, float)
        form = make_form(self.form, self.fixed_E)
        lN, lD, lL = np.log(N), np.log(D), np.log(L)
        fg = form_objective(form, lN, lD, lL, self.delta, W)

        def make_fg(idx):  # the objective over the points idx (None: all); see staged_lbfgs
            if idx is None:
                return fg
            return form_objective(form, lN[idx], lD[idx], lL[idx], self.delta, None if W is None else W[idx])

        starts = form.starts(self.grid == "coarse")
        br = staged_lbfgs(make_fg, starts, N.size, maxiter=self.maxiter, gtol=1e-12, ftol=1e-12, keep=60)
        order = np.argsort(np.where(np.isfinite(br.fun), br.fun, np.inf))
        best = None
        for i in order[: self.n_polish]:
            if not np.isfinite(br.fun[i]):
                break
            res = _polish(fg, br.x[i])
            if best is None or res.fun < best.fun:
                best = res
        if best is None:
            return self._fail("no start reached a finite objective", N.size)
        return self._set(form, fg, np.asarray(best.x, float), N, D, L, W)

    def _fit_free(self, N, D, loss, W):
        grid = "coarse" if self.grid == "coarse" else "hoffmann"
        fit = ChinchillaFit(delta=self.delta, grid=grid).fit(N, D, loss, sample_weight=W)
        self.params_ = dict(fit.params_)
        self.theta_ = np.asarray(fit.theta_, float)
        self.objective_, self.converged_, self.success_ = fit.objective_, fit.converged_, fit.success_
        self.identifiable_ = fit.identifiable_
        self.message_ = fit.message_
        self.result_ = _result(
            self.form,
            self.params_,
            fit.objective_,
            fit.success_,
            fit.converged_,
            fit.identifiable_,
            fit.message_,
            fit.n_points_,
        )
        return self

    def _set(self, form, fg, x, N, D, L, W):
        f1 = float(fg(x[None, :])[0][0])
        floor = 1e-18 * N.size * max(1.0, float(L.max()) ** 2)
        drop = np.inf
        for _ in range(3):  # converged: a tight polish no longer lowers the objective (relative)
            again = _polish(fg, x)
            drop = relative_drop(f1, float(again.fun), floor)
            if again.fun < f1:
                x, f1 = np.asarray(again.x, float), float(again.fun)
            if drop < CONVERGED_RTOL:
                break
        theta = form.expand(x[None, :])[0]
        self.theta_ = theta
        self.converged_ = bool(drop < CONVERGED_RTOL)
        self.params_ = theta_to_params(theta)
        if self.form == "gadre":
            eta = self.params_["alpha"]
            self.params_.update(a=self.params_["A"], c=self.params_["B"] * 6.0 ** (eta / 2), eta=eta)
        self.objective_ = f1
        flat = flat_parameters(form.reduce_grad(log_loss_jacobian(theta, N, D)), form.names, weights=W)
        self.identifiable_ = not flat
        problems = [flat_message(flat, N.size)] if flat else []
        if not (self.params_["alpha"] > 0 and self.params_["beta"] > 0):
            problems.append(
                f"non-positive exponent (alpha={self.params_['alpha']:.3g}, beta={self.params_['beta']:.3g})"
            )
        self.success_ = bool(np.all(np.isfinite(theta))) and not problems
        conv = (
            f"{'converged' if self.converged_ else 'NOT converged'}: a tight polish lowers the "
            f"objective by {drop:.1e} (relative{', < 1e-09' if self.converged_ else ''})"
        )
        self.message_ = "; ".join(problems + [conv])
        self.result_ = _result(
            self.form,
            self.params_,
            self.objective_,
            self.success_,
            self.converged_,
            self.identifiable_,
            self.message_,
            N.size,
        )
        return self

    def _fail(self, message, n):
        self.params_ = dict.fromkeys(("E", "A", "B", "alpha", "beta"), np.nan)
        self.theta_ = np.full(5, np.nan)
        self.objective_, self.converged_, self.success_, self.message_ = np.nan, False, False, message
        self.identifiable_ = False
        self.result_ = FitResult.failure("chinchilla", message, n, ("E", "A", "B", "alpha", "beta")).with_(
            extra={"form": self.form}
        )
        return self

    def predict(self, N, D):
        if not hasattr(self, "params_"):
            raise AttributeError("FormFit is not fitted: call fit(N, D, loss) first")
        return predict_loss(self.params_, N, D)

    def compute_optimal(self, flops):
        """Hoffmann's allocation (C = 6 N D) under this form's law: flops, n_params, tokens,
        tokens_per_param, loss per budget."""
        if not hasattr(self, "params_"):
            raise AttributeError("FormFit is not fitted: call fit(N, D, loss) first")
        return compute_optimal({k: self.params_[k] for k in ("E", "A", "B", "alpha", "beta")}, flops)

    def predict_compute(self, flops, tokens_per_param):
        """Gadre et al.'s view: loss at compute C for a family trained at M = D/N (C = 6 N D)."""
        C, M = np.asarray(flops, float), np.asarray(tokens_per_param, float)
        N = np.sqrt(C / (6.0 * M))
        return self.predict(N, M * N)


def _polish(fg, u0):
    def fun(x):
        f, g = fg(x[None, :])
        return float(f[0]), g[0]

    return minimize(
        fun,
        np.asarray(u0, float),
        jac=True,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000, "maxcor": 20},
    )


def _result(form, params, objective, success, converged, identifiable, message, n_points):
    core = {k: params[k] for k in ("E", "A", "B", "alpha", "beta")}
    exps = allocation_constants(core) if success else {"a": np.nan, "b": np.nan}
    extra = {"form": form}
    if form == "gadre":
        extra["gadre_params"] = {k: params[k] for k in ("E", "a", "c", "eta")}
    return FitResult(
        law="chinchilla",
        params=core,
        objective=float(objective),
        success=bool(success),
        converged=bool(converged),
        identifiable=bool(identifiable),
        message=message,
        n_points=int(n_points),
        exponents={"a": exps["a"], "b": exps["b"]},
        extra=extra,
    )


def fit_form(form, N, D, loss, *, fixed_E=None) -> FormFit:
    return FormFit(form, fixed_E=fixed_E).fit(N, D, loss)


# ----------------------------------------------------------------------------- batched refits
def warm_starts(form: _Form, theta0, lN, lD, n: int = 5, step: float = 0.05) -> np.ndarray:
    """A fit's optimum and up to four points around it in (alpha, beta), with log A and log B
    moved so the curve still passes near the data: (n, k) rows of the form's free parameters."""
    rows = [np.asarray(theta0, float)]
    for dal, dbe in ((step, step), (-step, -step), (step, -step), (-step, step))[: n - 1]:
        t = rows[0].copy()
        t[3] += dal
        t[4] += dbe
        t[1] += dal * float(np.mean(lN))
        t[2] += dbe * float(np.mean(lD))
        rows.append(t)
    return form.reduce(np.array(rows))


def refit_batch(
    form: str,
    N,
    D,
    loss,
    W,
    theta0,
    *,
    fixed_E: float | None = None,
    delta: float = DEFAULT_DELTA,
    maxiter: int = 200,
    n_warm: int = 5,
    grid_starts: np.ndarray | None = None,
    keep: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Refit `form` under R weight vectors at once (bootstrap resamples, CV folds, both).

    W: (R, P) point weights (0 leaves a point out); theta0: (5,) or (R, 5) optima to start
    from, each with n_warm - 1 points around it, theta = (log E, log A, log B, alpha, beta).
    grid_starts: a start grid (rows of free parameters) also tried for every weight vector:
    10 iterations from each, then the `keep` best continue with the warm starts. One batched
    L-BFGS over all rows, each with its own weights. Returns (R, 5) thetas and (R,)
    objectives (inf where no start reached a finite one).
    """
    f = make_form(form, fixed_E)
    N, D, L = (np.asarray(v, float) for v in (N, D, loss))
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    W = np.atleast_2d(np.asarray(W, float))
    R = W.shape[0]
    T0 = np.broadcast_to(np.asarray(theta0, float), (R, 5))
    starts = np.stack([warm_starts(f, t, lN, lD, n_warm) for t in T0])  # (R, n_warm, k)
    if grid_starts is not None and len(grid_starts):
        S = len(grid_starts)
        fg = form_objective(f, lN, lD, lL, delta, np.repeat(W, S, axis=0))
        b1 = batched_lbfgs(fg, np.tile(grid_starts, (R, 1)), maxiter=10, gtol=1e-12, ftol=1e-14)
        F1 = np.where(np.isfinite(b1.fun), b1.fun, np.inf).reshape(R, S)
        best = np.argsort(F1, axis=1, kind="stable")[:, :keep]
        starts = np.concatenate([starts, b1.x.reshape(R, S, -1)[np.arange(R)[:, None], best]], axis=1)
    M = starts.shape[1]
    fg = form_objective(f, lN, lD, lL, delta, np.repeat(W, M, axis=0))
    br = batched_lbfgs(fg, starts.reshape(R * M, -1), maxiter=maxiter, gtol=1e-12, ftol=1e-14)
    F = np.where(np.isfinite(br.fun), br.fun, np.inf).reshape(R, M)
    best = np.argmin(F, axis=1)
    U = br.x.reshape(R, M, -1)[np.arange(R), best]
    return f.expand(U), F[np.arange(R), best]


# ----------------------------------------------------------------------------- held-out checks
def holdout_errors(fit: FormFit, N, D, loss, flops, threshold: float) -> dict:
    """Relative errors (L^ - L)/L of a fit on the points with flops > threshold.

    The `holdout` block of `scalelab fit --json`: {"flops", "n_train", "n_test", "errors",
    "mean_abs_rel_error", "max_abs_rel_error"}; errors are signed, one per held-out point.
    """
    N, D, L, C = (np.asarray(v, float) for v in (N, D, loss, flops))
    hi = C > threshold
    out = {
        "flops": float(threshold),
        "n_train": int((~hi).sum()),
        "n_test": int(hi.sum()),
        "errors": [],
        "mean_abs_rel_error": np.nan,
        "max_abs_rel_error": np.nan,
    }
    if hi.any() and fit.success_:
        err = (fit.predict(N[hi], D[hi]) - L[hi]) / L[hi]
        out.update(
            errors=[float(e) for e in err],
            mean_abs_rel_error=float(np.mean(np.abs(err))),
            max_abs_rel_error=float(np.max(np.abs(err))),
        )
    return out


def fit_with_holdout(form, N, D, loss, flops, threshold, *, fixed_E=None):
    """Fit `form` on the points with flops <= threshold; return (fit, holdout dict)."""
    N, D, L, C = (np.asarray(v, float) for v in (N, D, loss, flops))
    lo = C <= threshold
    fit = FormFit(form, fixed_E=fixed_E).fit(N[lo], D[lo], L[lo])
    return fit, holdout_errors(fit, N, D, L, C, threshold)
