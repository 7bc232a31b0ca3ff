"""Choosing the law form by cross-validation over compute, and repeating the choice in every
bootstrap resample so that the answer's intervals hold the form's uncertainty too.

Candidates are the Approach 3 forms of analysis/laws/forms.py: free, tied, gadre, and fixed-e
when E is known (given, or the corpus' entropy rate). Cross-validation over compute: for a few
thresholds t, fit on the runs with C <= t and predict the runs above it, the direction every
scaling law is used in. A fold counts only when its fit set keeps >= 3 model sizes and >= 3
token budgets (with two sizes the free form is not identified: E trades off exactly with A and
alpha); with no such fold every form is "not testable here". A form's CV error is the mean
over folds of its mean |relative loss error| on the held-out runs; a form whose fit is flat
on some fold is not scored. The lowest error wins, except that a form with fewer parameters
within TIE_RTOL (relative) or TIE_ATOL (absolute) of it wins instead: flexibility must earn
its place out of sample. The rule is `choose`, applied identically to every resample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .laws.chinchilla import DEFAULT_DELTA
from .laws.forms import FORMS, FormFit, make_form, n_free_params, refit_batch
from .laws.identify import flat_parameters, log_loss_jacobian

MIN_SIZES = 3  # model sizes a fold's fit set must keep
MIN_BUDGETS = 3  # token budgets a fold's fit set must keep
MAX_FOLDS = 4
TIE_RTOL = 0.10  # CV errors this close (relative) are a tie: fewer parameters win
TIE_ATOL = 1e-4  # ... or this close in absolute relative error (0.01%)
TIE_ORDER = ("tied", "fixed-e", "gadre", "free")  # last resort among equally simple forms
RESAMPLE_STARTS = 1  # warm starts per refit in a resample: the full data's optimum (see calibration)


def distinct(x) -> int:
    """Distinct values of a positive quantity, 1% apart or more."""
    x = np.asarray(x, float)
    return int(np.unique(np.round(np.log(x[x > 0]), 2)).size) if x.size else 0


def design_ok(N, D) -> bool:
    """A fit set that can identify every form: >= 3 model sizes and >= 3 token budgets."""
    return distinct(N) >= MIN_SIZES and distinct(D) >= MIN_BUDGETS


@dataclass
class Folds:
    """CV over compute: fold f fits the runs train[f] (C <= thresholds[f]), tests the rest."""

    thresholds: np.ndarray
    train: np.ndarray  # (F, P) bool
    reason: str = ""  # why there is no fold, when there is none

    def __len__(self) -> int:
        return len(self.thresholds)


def compute_folds(N, D, C, *, max_folds: int = MAX_FOLDS) -> Folds:
    """Up to `max_folds` compute thresholds whose fit set passes `design_ok` and whose test set
    is not empty, preferring those that hold out at most half the runs, spread evenly."""
    N, D, C = (np.asarray(v, float) for v in (N, D, C))
    levels = np.unique(C)
    cands = np.sqrt(levels[:-1] * levels[1:])
    valid = [t for t in cands if design_ok(N[C <= t], D[C <= t])]
    if not valid:
        return Folds(
            np.array([]),
            np.zeros((0, C.size), bool),
            f"no compute threshold leaves >= {MIN_SIZES} model sizes and >= {MIN_BUDGETS} token "
            f"budgets below it with runs above it ({distinct(N)} sizes, {distinct(D)} budgets in all)",
        )
    half = [t for t in valid if (C > t).sum() <= max(1, C.size // 2)]
    valid = half or valid
    idx = np.unique(np.round(np.linspace(0, len(valid) - 1, min(max_folds, len(valid)))).astype(int))
    thr = np.array([valid[i] for i in idx])
    return Folds(thr, C[None, :] <= thr[:, None])


def predict_theta(T, N, D) -> np.ndarray:
    """E + A/N^alpha + B/D^beta for thetas T (..., 5) at points (P,): shape (..., P)."""
    T = np.asarray(T, float)
    lN, lD = np.log(np.asarray(N, float)), np.log(np.asarray(D, float))
    e, a, b, al, be = (T[..., i : i + 1] for i in range(5))
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(e) + np.exp(a - al * lN) + np.exp(b - be * lD)


def choose(scores: dict, order=FORMS) -> str | None:
    """The selection rule: lowest CV error, ties (TIE_RTOL, TIE_ATOL) to fewer parameters."""
    num = {f: float(s) for f, s in scores.items() if not isinstance(s, str) and np.isfinite(s)}
    if not num:
        return None
    best = min(num.values())
    near = [f for f, s in num.items() if s <= best * (1 + TIE_RTOL) + TIE_ATOL]
    return min(near, key=lambda f: (n_free_params(f), num[f], TIE_ORDER.index(f)))


@dataclass
class Selection:
    """The outcome of `select`: every candidate's all-data fit and CV score, and the choice."""

    candidates: tuple[str, ...]
    fixed_E: float | None
    folds: Folds
    fits: dict[str, FormFit]
    scores: dict[str, float | str]  # CV error, or why the form has none
    fold_thetas: dict[str, np.ndarray] = field(default_factory=dict)  # (F, 5) per form
    fold_errors: dict[str, np.ndarray] = field(default_factory=dict)  # (F,) per form
    chosen: str | None = None
    reason: str = ""

    @property
    def usable(self) -> list[str]:
        return [f for f in self.candidates if self.fits[f].success_]


def candidate_forms(fixed_E: float | None, forms=None) -> tuple[str, ...]:
    if forms:
        return tuple(forms)
    return tuple(f for f in FORMS if f != "fixed-e" or fixed_E is not None)


def _fold_fits(form: str, fit: FormFit, N, D, L, folds: Folds, fixed_E, delta):
    """(F, 5) thetas of `form` on each fold's fit set, and {fold: why its fit is unusable}
    (too few points for the form's parameters, or a flat direction)."""
    f = make_form(form, fixed_E)
    T, F = refit_batch(
        form,
        N,
        D,
        L,
        folds.train.astype(float),
        fit.theta_,
        fixed_E=fixed_E,
        delta=delta,
        maxiter=300,
        grid_starts=f.starts(coarse=True),
    )
    bad = {}
    for k, th in enumerate(T):
        tr = folds.train[k]
        if tr.sum() <= n_free_params(form):
            bad[k] = f"{int(tr.sum())} points for {n_free_params(form)} parameters"
            continue
        flat = (
            flat_parameters(f.reduce_grad(log_loss_jacobian(th, N[tr], D[tr])), f.names)
            if np.isfinite(F[k])
            else ["all"]
        )
        if flat:
            bad[k] = "flat in " + ", ".join(flat)
    return T, bad


def fold_errors(T, N, D, L, train, weights=None) -> np.ndarray:
    """Mean |relative error| on each fold's held-out runs: T (..., F, 5), train (F, P),
    weights (..., P) (resample counts; None: 1). Returns (..., F); NaN where nothing is held out."""
    pred = predict_theta(T, N, D)  # (..., F, P)
    err = np.abs(pred / np.asarray(L, float) - 1.0)
    w = np.ones(np.shape(L)) if weights is None else np.asarray(weights, float)
    w = np.asarray(w)[..., None, :] * (~train)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w.sum(-1) > 0, (w * err).sum(-1) / w.sum(-1), np.nan)


def select(
    N,
    D,
    loss,
    C,
    *,
    forms=None,
    fixed_E: float | None = None,
    grid: str = "full",
    delta=DEFAULT_DELTA,
    folds: Folds | None = None,
) -> Selection:
    """Fit every candidate form on all runs and on each fold; score and choose (see module).
    folds: the CV folds (default: `compute_folds`)."""
    N, D, L, C = (np.asarray(v, float) for v in (N, D, loss, C))
    cands = candidate_forms(fixed_E, forms)
    fits = {f: FormFit(f, fixed_E=fixed_E, grid=grid, delta=delta).fit(N, D, L) for f in cands}
    folds = folds if folds is not None else compute_folds(N, D, C)
    sel = Selection(cands, fixed_E, folds, fits, {})
    for f in cands:
        if not fits[f].success_:
            sel.scores[f] = f"not identifiable on all {N.size} runs: {fits[f].message_}"
        elif not len(folds):
            sel.scores[f] = "not testable here: " + folds.reason
        else:
            T, bad = _fold_fits(f, fits[f], N, D, L, folds, fixed_E, delta)
            sel.fold_thetas[f] = T
            sel.fold_errors[f] = fold_errors(T, N, D, L, folds.train)
            if bad:
                k = min(bad)
                sel.scores[f] = f"not identifiable with C <= {folds.thresholds[k]:.3g}: {bad[k]}"
            else:
                sel.scores[f] = float(np.mean(sel.fold_errors[f]))
    sel.chosen = choose(sel.scores)
    if sel.chosen is None:
        usable = sel.usable
        sel.chosen = "free" if "free" in usable else (usable[0] if usable else None)
    sel.reason = selection_reason(sel)
    return sel


def select_form(N, D, loss, flops=None, *, holdout_flops=None, fixed_E=None, forms=None) -> dict:
    """The selection as a dict: {"chosen", "reason", "holdout": {"by": "flops", "thresholds"},
    "table": [{"form", "n_params", "success", "objective", "message", "cv_error", "fold_errors",
    "mean_abs_rel_error"}], "fit": the chosen FormFit on all runs}. holdout_flops: one fold,
    fitted on the runs with C <= it (no design requirement), instead of `compute_folds`."""
    N, D, L = (np.asarray(v, float) for v in (N, D, loss))
    C = 6.0 * N * D if flops is None else np.asarray(flops, float)
    folds = None
    if holdout_flops is not None:
        folds = Folds(np.array([float(holdout_flops)]), (C <= holdout_flops)[None, :])
    sel = select(N, D, L, C, forms=forms, fixed_E=fixed_E, folds=folds)
    table = []
    for f in sel.candidates:
        s = sel.scores[f]
        fit = sel.fits[f]
        table.append(
            {
                "form": f,
                "n_params": n_free_params(f),
                "success": bool(fit.success_) and not isinstance(s, str),
                "objective": fit.objective_,
                "message": s if isinstance(s, str) else fit.message_,
                "cv_error": None if isinstance(s, str) else s,
                "mean_abs_rel_error": np.nan if isinstance(s, str) else s,
                "fold_errors": [float(e) for e in sel.fold_errors.get(f, [])],
            }
        )
    return {
        "chosen": sel.chosen,
        "reason": sel.reason,
        "holdout": {"by": "flops", "thresholds": [float(t) for t in sel.folds.thresholds]},
        "table": table,
        "fit": sel.fits.get(sel.chosen) if sel.chosen else None,
        "selection": sel,
    }


def selection_reason(sel: Selection) -> str:
    """One sentence: which form, on what evidence, and what the others scored."""
    if sel.chosen is None:
        return "no form could be fitted: " + "; ".join(f"{f}: {s}" for f, s in sel.scores.items())
    s = sel.scores[sel.chosen]
    if isinstance(s, str):
        return (
            f"{sel.chosen} (unvalidated: no form could be tested by cross-validation over compute; "
            f"{s.removeprefix('not testable here: ')})"
        )
    num = {f: v for f, v in sel.scores.items() if not isinstance(v, str)}
    best = min(num, key=lambda f: num[f])
    folds = ", ".join(f"{t:.3g}" for t in sel.folds.thresholds)
    txt = (
        f"{sel.chosen}: lowest cross-validated error over compute ({s:.2%} mean |relative error| on "
        f"the runs above C = {folds}, fitted on those below)"
    )
    if best != sel.chosen:
        txt = (
            f"{sel.chosen}: within the tie margin of {best} ({s:.2%} vs {num[best]:.2%}, cross-validated "
            f"over compute at C = {folds}) with fewer parameters"
        )
    others = [f"{f} {v:.2%}" if not isinstance(v, str) else f"{f} {v}" for f, v in sel.scores.items()]
    txt += "; " + "; ".join(o for o in others if not o.startswith(sel.chosen + " "))
    huber = [f for f in sel.usable if f != "gadre"]  # same objective: comparable in sample
    insample = min(huber, key=lambda f: sel.fits[f].objective_) if huber else None
    if insample is not None and insample != sel.chosen and sel.chosen != "gadre":
        txt += f". The in-sample objective alone would have chosen {insample}"
    return txt


# ----------------------------------------------------------------------------- resamples
def resample_choices(
    sel: Selection, N, D, loss, W, *, delta=DEFAULT_DELTA, maxiter: int = 200, n_warm: int = RESAMPLE_STARTS
):
    """The selection repeated under K resample weights W (K, P), warm-started from the full
    data's fits. Returns (chosen form per resample (K,) of str, its all-run theta (K, 5), and
    {form: (K,) CV error}). A resample with no usable fold keeps the full data's choice.
    Large problems are split over two processes (results do not depend on the split)."""
    W = np.atleast_2d(np.asarray(W, float))
    args = (sel, np.asarray(N, float), np.asarray(D, float), np.asarray(loss, float))
    chunks = np.array_split(np.arange(W.shape[0]), _n_jobs(W.size))
    parts = _map(_choices, [(*args, W[c], delta, maxiter, n_warm) for c in chunks])
    chosen = np.concatenate([p[0] for p in parts]) if parts else np.array([], dtype=object)
    thetas = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 5))
    cv = {f: np.concatenate([p[2][f] for p in parts]) for f in (parts[0][2] if parts else {})}
    return chosen, thetas, cv


PARALLEL_MIN = 20_000  # resample weights x points above which two processes pay off (Epoch: 48,000)


def _n_jobs(size: int) -> int:
    """2 when the work is large, two CPUs are ours and forking is safe (never under a live
    Ray: forking its threads can deadlock), else 1."""
    import os
    import sys

    ray = sys.modules.get("ray")
    if size < PARALLEL_MIN or (ray is not None and getattr(ray, "is_initialized", lambda: False)()):
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cpus >= 2 else 1


def _map(fn, args: list) -> list:
    if len(args) <= 1:
        return [fn(a) for a in args]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(len(args), mp_context=mp.get_context("fork")) as ex:
        return list(ex.map(fn, args))


def _choices(args):
    sel, N, D, L, W, delta, maxiter, n_warm = args
    K, F = W.shape[0], len(sel.folds)
    thetas: dict[str, np.ndarray] = {}
    cv: dict[str, np.ndarray] = {}
    scored = [f for f in sel.usable if not isinstance(sel.scores.get(f), str)]
    for form in sel.usable:
        if form not in scored and form != sel.chosen:
            continue
        t0 = [sel.fits[form].theta_] + (
            [sel.fold_thetas[form][k] for k in range(F)] if form in scored else []
        )
        Ws = np.concatenate([W] + ([W * sel.folds.train[k] for k in range(F)] if form in scored else []))
        T0 = np.repeat(np.array(t0), K, axis=0)
        T, _ = refit_batch(
            form, N, D, L, Ws, T0, fixed_E=sel.fixed_E, delta=delta, maxiter=maxiter, n_warm=n_warm
        )
        T = T.reshape(len(t0), K, 5)
        thetas[form] = T[0]
        if form in scored:
            folds_T = np.transpose(T[1:], (1, 0, 2))  # (K, F, 5)
            err = fold_errors(folds_T, N, D, L, sel.folds.train, W)
            err[~_valid_folds(sel, N, D, W, folds_T, form)] = np.nan
            n_ok = np.isfinite(err).sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                cv[form] = np.where(n_ok > 0, np.nansum(err, 1) / n_ok, np.nan)
    chosen = np.empty(K, dtype=object)
    for k in range(K):
        c = choose({f: cv[f][k] for f in cv}) if cv else None
        chosen[k] = c if c is not None else sel.chosen
    out = np.array([thetas[c][k] for k, c in enumerate(chosen)]) if K else np.zeros((0, 5))
    return chosen, out, cv


def _valid_folds(sel: Selection, N, D, W, folds_T, form: str) -> np.ndarray:
    """(K, F): the fold's fit set in resample k keeps the design, holds out a run, and the
    form's fit on it is not flat."""
    K, F = W.shape[0], len(sel.folds)
    ok = np.zeros((K, F), bool)
    f = make_form(form, sel.fixed_E)
    for k in range(K):
        for j in range(F):
            tr = sel.folds.train[j] & (W[k] > 0)
            if not (design_ok(N[tr], D[tr]) and np.any(W[k][~sel.folds.train[j]] > 0)):
                continue
            J = (
                f.reduce_grad(log_loss_jacobian(folds_T[k, j], N, D))
                * np.sqrt(W[k] * sel.folds.train[j])[:, None]
            )
            ok[k, j] = not flat_parameters(J, f.names)
    return ok
