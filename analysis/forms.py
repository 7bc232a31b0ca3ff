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

`select_form` fits every identifiable form on the smaller runs, scores each by its relative
error on the largest runs (held out), and picks the one that extrapolates best: in-sample
objectives always favour the most flexible form, which is exactly what fails out of sample.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

from ._optim import batched_lbfgs
from .chinchilla import (
    DEFAULT_DELTA,
    ChinchillaFit,
    _fg_batch,
    _validate_points,
    allocation_constants,
    predict_loss,
    theta_to_params,
)
from .result import FitResult

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
    """A restriction of the five-parameter law: free parameters u <-> full theta."""

    name = "free"
    names: tuple[str, ...] = ("log E", "log A", "log B", "alpha", "beta")

    def expand(self, U):
        return U

    def reduce_grad(self, G):
        return G

    def starts(self):
        return ChinchillaFit()._starts()


class _Tied(_Form):
    name = "tied"
    names = ("log E", "log A", "log B", "exponent")

    def expand(self, U):
        return np.column_stack([U, U[:, 3]])

    def reduce_grad(self, G):
        return np.column_stack([G[:, :3], G[:, 3] + G[:, 4]])

    def starts(self):
        ex = np.arange(0.0, 2.0 + 1e-9, 0.5)
        e = np.arange(-1.0, 1.0 + 1e-9, 0.5)
        ab = np.arange(0.0, 25.0 + 1e-9, 5.0)
        return np.array(list(itertools.product(e, ab, ab, ex)))


class _FixedE(_Form):
    name = "fixed-e"
    names = ("log A", "log B", "alpha", "beta")

    def __init__(self, E: float):
        self.e = float(np.log(E))

    def expand(self, U):
        return np.column_stack([np.full(U.shape[0], self.e), U])

    def reduce_grad(self, G):
        return G[:, 1:]

    def starts(self):
        ex = np.arange(0.0, 2.0 + 1e-9, 0.5)
        ab = np.arange(0.0, 25.0 + 1e-9, 5.0)
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


# ----------------------------------------------------------------------------- estimator
class FormFit:
    """Approach 3 under one law form (scikit-learn style, `result_` is a FitResult).

    >>> FormFit("tied").fit(N, D, loss).predict(7e9, 1.4e11)
    >>> FormFit("fixed-e", fixed_E=1.75).fit(N, D, loss).result_.params

    Fitted: params_ (E, A, B, alpha, beta; for gadre also a, c, eta of the paper's form),
    objective_, converged_, success_, message_, result_.
    """

    def __init__(
        self,
        form: str = "tied",
        *,
        fixed_E: float | None = None,
        delta: float = DEFAULT_DELTA,
        n_polish: int = 4,
        maxiter: int = 300,
    ):
        self.form = form
        self.fixed_E = fixed_E
        self.delta = delta
        self.n_polish = n_polish
        self.maxiter = maxiter

    def _fg(self, lN, lD, lL, W):
        f = make_form(self.form, self.fixed_E)
        if self.form == "gadre":
            L = np.exp(lL)
            base = lambda T: _fg_lsq(T, lN, lD, L, W)  # noqa: E731
        else:
            base = lambda T: _fg_batch(T, lN, lD, lL, self.delta, W)  # noqa: E731

        def fg(U, rows=None):
            F, G = base(f.expand(U))
            return F, f.reduce_grad(G)

        return f, fg

    def fit(self, N, D, loss, *, sample_weight=None):
        if self.form == "free":
            return self._fit_free(N, D, loss, sample_weight)
        (N, D, L), problem = _validate_points(N, D, loss, n_free_params(self.form))
        if problem is not None:
            return self._fail("unidentifiable: " + problem, N.size)
        W = None if sample_weight is None else np.asarray(sample_weight, float)
        form, fg = self._fg(np.log(N), np.log(D), np.log(L), W)
        br = batched_lbfgs(fg, form.starts(), maxiter=self.maxiter, gtol=1e-12, ftol=1e-12)
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
        # floor for (near) noise-free data: residuals of 1e-9 count as exact
        floor = 1e-8 * N.size * float(max(np.log(N).max(), np.log(D).max())) * max(1.0, float(L.max()))
        return self._set(form, fg, best, N.size, floor)

    def _fit_free(self, N, D, loss, W):
        fit = ChinchillaFit(delta=self.delta).fit(N, D, loss, sample_weight=W)
        self.params_ = dict(fit.params_)
        self.objective_, self.converged_, self.success_ = fit.objective_, fit.converged_, fit.success_
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

    def _set(self, form, fg, res, n_points, gfloor):
        theta = form.expand(res.x[None, :])[0]
        f1, g1 = fg(res.x[None, :])
        again = _polish(fg, res.x)  # convergence: a second polish must not improve
        gscale = max(abs(float(f1[0])), gfloor)
        grad = float(np.max(np.abs(g1[0]))) / gscale
        drop = (float(f1[0]) - min(float(again.fun), float(f1[0]))) / max(abs(float(f1[0])), 1e-300)
        self.converged_ = bool(grad < 1e-3 and drop < 1e-6)
        self.params_ = theta_to_params(theta)
        if self.form == "gadre":
            eta = self.params_["alpha"]
            self.params_.update(a=self.params_["A"], c=self.params_["B"] * 6.0 ** (eta / 2), eta=eta)
        self.objective_ = float(f1[0])
        ok_exp = self.params_["alpha"] > 0 and self.params_["beta"] > 0
        self.success_ = bool(np.all(np.isfinite(theta)) and ok_exp)
        msg = (
            f"{'converged' if self.converged_ else 'NOT converged'}: relative gradient "
            f"{grad:.2e}, a second polish lowers the objective by {drop:.1e} (relative)"
        )
        if not ok_exp:
            msg += f"; non-positive exponent (alpha={self.params_['alpha']:.3g}, beta={self.params_['beta']:.3g})"
        self.message_ = msg
        self.result_ = _result(
            self.form, self.params_, self.objective_, self.success_, self.converged_, True, msg, n_points
        )
        return self

    def _fail(self, message, n):
        self.params_ = dict.fromkeys(("E", "A", "B", "alpha", "beta"), np.nan)
        self.objective_, self.converged_, self.success_, self.message_ = np.nan, False, False, message
        self.result_ = FitResult.failure("chinchilla", message, n, ("E", "A", "B", "alpha", "beta")).with_(
            extra={"form": self.form}
        )
        return self

    def predict(self, N, D):
        if not hasattr(self, "params_"):
            raise AttributeError("FormFit is not fitted: call fit(N, D, loss) first")
        return predict_loss(self.params_, N, D)

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


def largest_sizes_threshold(n_params, frac: float = 0.2, min_train_sizes: int = 2) -> float | None:
    """A model-size threshold holding out the largest sizes (at least one, about `frac` of
    the runs), keeping at least `min_train_sizes` sizes to fit on; None if impossible."""
    N = np.asarray(n_params, float)
    sizes = np.unique(N)
    if sizes.size <= min_train_sizes:
        return None
    for k in range(1, sizes.size - min_train_sizes + 1):
        thr = float(np.sqrt(sizes[-k] * sizes[-k - 1]))
        if (N > thr).mean() >= frac or k == sizes.size - min_train_sizes:
            return thr
    return None


def select_form(
    N, D, loss, flops=None, *, holdout_flops=None, fixed_E=None, forms=FORMS, tolerance: float = 0.1
) -> dict:
    """Choose the law form that extrapolates best to the largest runs.

    Every identifiable form is fitted without the largest runs and scored by its mean absolute
    relative error on them. "Largest" means the largest model sizes (about 20% of the runs),
    since the question a law answers is usually a bigger model; with `holdout_flops` it means
    the runs above that compute instead. The simplest form whose held-out error is within
    `tolerance` (relative) of the best wins (a more flexible form must earn its parameters
    out of sample), and is refitted on all runs.

    Returns {"chosen", "reason", "holdout": {"by", "threshold"}, "table": [{"form",
    "n_params", "success", "objective", "message", "n_train", "n_test", "errors",
    "mean_abs_rel_error", "max_abs_rel_error"}], "fit": FormFit on all runs (or None)}.
    """
    N, D, L = (np.asarray(v, float) for v in (N, D, loss))
    C = 6.0 * N * D if flops is None else np.asarray(flops, float)
    by, var = ("flops", C) if holdout_flops is not None else ("n_params", N)
    thr = float(holdout_flops) if holdout_flops is not None else largest_sizes_threshold(N)
    if thr is None:
        return {
            "chosen": None,
            "reason": "fewer than three model sizes: none can be held out",
            "table": [],
            "holdout": None,
            "fit": None,
        }
    rows = []
    for form in forms:
        if form == "fixed-e" and fixed_E is None:
            continue
        fit, ho = fit_with_holdout(form, N, D, L, var, thr, fixed_E=fixed_E)
        ho.pop("flops")
        rows.append(
            {
                "form": form,
                "n_params": n_free_params(form),
                "success": fit.success_,
                "objective": fit.objective_,
                "message": fit.message_,
                **ho,
            }
        )
    ok = [r for r in rows if r["success"] and np.isfinite(r["mean_abs_rel_error"])]
    out = {"holdout": {"by": by, "threshold": thr}, "table": rows}
    if not ok:
        return {
            **out,
            "chosen": None,
            "fit": None,
            "reason": "no form could be fitted without the largest runs: "
            + "; ".join(f"{r['form']}: {r['message']}" for r in rows),
        }
    best_err = min(r["mean_abs_rel_error"] for r in ok)
    near = [r for r in ok if r["mean_abs_rel_error"] <= best_err * (1 + tolerance)]
    best = min(near, key=lambda r: (r["n_params"], r["mean_abs_rel_error"]))
    return {
        **out,
        "chosen": best["form"],
        "reason": _reason(best, rows, by, thr, best_err),
        "fit": FormFit(best["form"], fixed_E=fixed_E).fit(N, D, L),
    }


def _reason(best, rows, by, thr, best_err):
    what = f"N > {thr:.3g}" if by == "n_params" else f"C > {thr:.3g}"
    others = ", ".join(
        f"{r['form']} {r['mean_abs_rel_error']:.2%}" if r["success"] else f"{r['form']} not identifiable"
        for r in rows
        if r is not best
    )
    txt = (
        f"{best['form']} extrapolates best: mean |relative error| {best['mean_abs_rel_error']:.2%} "
        f"(max {best['max_abs_rel_error']:.2%}) on the {best['n_test']} largest runs "
        f"({what}) when fitted on the {best['n_train']} below; others: {others or 'none'}"
    )
    if best["mean_abs_rel_error"] > best_err:
        txt += "; preferred for having fewer parameters at an error within 10% of the best"
    same = [r for r in rows if r["success"] and r["form"] != "gadre" and best["form"] != "gadre"]
    insample = min(same, key=lambda r: r["objective"]) if same else None
    if insample is not None and insample is not best:
        txt += f". The in-sample objective alone would have chosen {insample['form']}"
    return txt + "."


def form_selection_section(points, *, fixed_E=None, holdout_flops=None) -> dict | None:
    """Report section {"title", "markdown", "figures"} for form selection (None: too few runs)."""
    fixed_E = fixed_E if fixed_E is not None else getattr(points, "true_entropy", None)
    sel = select_form(points.N, points.D, points.loss, points.C, holdout_flops=holdout_flops, fixed_E=fixed_E)
    if sel["chosen"] is None and not sel["table"]:
        return None
    lines = ["| form | free parameters | held-out mean abs. rel. error | max |", "|---|---|---|---|"]
    for r in sel["table"]:
        m = (
            f"{r['mean_abs_rel_error']:.2%} | {r['max_abs_rel_error']:.2%}"
            if r["success"] and np.isfinite(r["mean_abs_rel_error"])
            else "failed | " + r["message"][:60]
        )
        lines.append(f"| {r['form']} | {r['n_params']} | {m} |")
    md = (
        f"**Chosen form: {sel['chosen'] or 'none'}.** {sel['reason']}\n\n"
        + "\n".join(lines)
        + "\n\nForms are scored by extrapolation to the largest runs, not by in-sample fit."
    )
    return {"title": "Law form selection", "markdown": md, "figures": {}}
