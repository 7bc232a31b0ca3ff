"""Bootstrap over runs: percentile intervals for parameters and derived quantities.

Resampling is over RUNS (or any grouping the caller passes, e.g. run_id when a run contributes
several points): a resample is a vector of integer weights per point, so Approach 3 refits of
all resamples are one batched L-BFGS problem (resamples x warm starts as rows, each row with
its own weight vector), split over worker processes. Each resample starts from the full-data
optimum plus a small grid around it; the best row per resample is kept.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._optim import batched_lbfgs
from .laws.chinchilla import (
    DEFAULT_DELTA,
    ChinchillaFit,
    _fg_batch,
    allocation_constants,
    compute_optimal,
    params_to_theta,
    theta_to_params,
)
from .result import FitResult

log = logging.getLogger(__name__)


@dataclass
class BootstrapResult:
    """samples: one row per resample (parameters and derived quantities); ci: name -> (lo, hi)
    percentile interval at `level`; failed: resamples whose refit was unusable (excluded)."""

    samples: pd.DataFrame
    ci: dict[str, tuple[float, float]]
    n_resamples: int
    level: float = 0.95
    seed: int = 0
    n_failed: int = 0
    success: bool = True
    message: str = ""
    point_estimate: dict[str, float] = field(default_factory=dict)

    def interval(self, name):
        return self.ci[name]


def resample_weights(n_points: int, n_resamples: int, rng, groups=None) -> np.ndarray:
    """(K, P) integer weights: how often each point appears in each resample of the runs."""
    if groups is None:
        idx = rng.integers(0, n_points, size=(n_resamples, n_points))
        W = np.zeros((n_resamples, n_points))
        np.add.at(W, (np.repeat(np.arange(n_resamples), n_points), idx.ravel()), 1.0)
        return W
    codes, uniq = pd.factorize(pd.Series(groups))
    G = uniq.size
    idx = rng.integers(0, G, size=(n_resamples, G))
    Wg = np.zeros((n_resamples, G))
    np.add.at(Wg, (np.repeat(np.arange(n_resamples), G), idx.ravel()), 1.0)
    return Wg[:, codes]


def percentile_ci(samples: pd.DataFrame, level=0.95) -> dict[str, tuple[float, float]]:
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for c in samples.columns:
        v = samples[c].to_numpy(float)
        v = v[np.isfinite(v)]
        out[c] = (float(np.percentile(v, lo)), float(np.percentile(v, hi))) if v.size else (np.nan, np.nan)
    return out


def _warm_starts(theta: np.ndarray) -> np.ndarray:
    """The full-data optimum and a small grid around it in (alpha, beta), with a and b moved
    so the curve still passes near the data (a += dalpha * 20, roughly log N of the data)."""
    rows = [theta]
    for dal, dbe in ((0.05, 0.05), (-0.05, -0.05), (0.05, -0.05), (-0.05, 0.05)):
        t = theta.copy()
        t[3] += dal
        t[4] += dbe
        t[1] += dal * 20.0
        t[2] += dbe * 22.0
        rows.append(t)
    return np.array(rows)


def _chin_chunk(args):
    starts, Wrows, lN, lD, lL, delta, maxiter = args
    fg = lambda X, rows: _fg_batch(X, lN, lD, lL, delta, Wrows[rows])  # noqa: E731
    br = batched_lbfgs(fg, starts, maxiter=maxiter, gtol=1e-12, ftol=1e-14)
    return br.x, br.fun, br.grad


def weighted_refits(
    N, D, loss, W, theta0, *, delta: float = DEFAULT_DELTA, n_jobs: int | None = None, maxiter: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """Refit Approach 3 under K weight vectors at once (bootstrap, leave-one-out, subsets).

    W: (K, P) point weights; theta0: the full-data optimum (warm start, plus a small grid around
    it). Returns (K, 5) thetas (log E, log A, log B, alpha, beta) and (K,) objectives.
    """
    N, D, L = (np.asarray(v, float) for v in (N, D, loss))
    W = np.atleast_2d(np.asarray(W, float))
    K = W.shape[0]
    base = _warm_starts(np.asarray(theta0, float))
    M = base.shape[0]
    starts = np.tile(base, (K, 1))  # row r*M + j: weight vector r, start j
    Wrows = np.repeat(W, M, axis=0)
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    n_jobs = n_jobs or min(2, os.cpu_count() or 1)
    n_jobs = n_jobs if K >= 50 else 1  # process start-up is not worth it for small K
    chunks = np.array_split(np.arange(starts.shape[0]), n_jobs)
    args = [(starts[c], Wrows[c], lN, lD, lL, delta, maxiter) for c in chunks]
    if n_jobs > 1:
        with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("fork")) as ex:
            outs = list(ex.map(_chin_chunk, args))
    else:
        outs = [_chin_chunk(a) for a in args]
    X = np.concatenate([o[0] for o in outs])
    F = np.concatenate([o[1] for o in outs])
    F = np.where(np.isfinite(F), F, np.inf).reshape(K, M)
    best = np.argmin(F, axis=1)
    return X.reshape(K, M, 5)[np.arange(K), best], F[np.arange(K), best]


def bootstrap_chinchilla(
    N,
    D,
    loss,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    budgets=(),
    delta: float = DEFAULT_DELTA,
    groups=None,
    full_fit: ChinchillaFit | FitResult | None = None,
    n_jobs: int | None = None,
    level: float = 0.95,
    maxiter: int = 400,
) -> BootstrapResult:
    """Approach 3 bootstrap; intervals for E, A, B, alpha, beta, a, b, G and, per budget C,
    N_opt@C, D_opt@C, D/N@C, loss@C."""
    N, D, L = (np.asarray(v, float) for v in (N, D, loss))
    if full_fit is None:
        full_fit = ChinchillaFit(delta=delta).fit(N, D, L)
    full = full_fit.result_ if hasattr(full_fit, "result_") else full_fit  # a FitResult
    if not full.success:
        return BootstrapResult(
            pd.DataFrame(),
            {},
            n_resamples,
            level,
            seed,
            n_resamples,
            False,
            "full-data fit failed: " + full.message,
        )
    rng = np.random.default_rng(seed)
    W = resample_weights(N.size, n_resamples, rng, groups)
    T, _ = weighted_refits(
        N, D, L, W, params_to_theta(full.params), delta=delta, n_jobs=n_jobs, maxiter=maxiter
    )
    return _summarise_chinchilla(T, budgets, n_resamples, level, seed, full)


def _summarise_chinchilla(T, budgets, n_resamples, level, seed, full):
    rows = []
    for th in T:
        p = theta_to_params(th)
        ok = np.all(np.isfinite(th)) and p["alpha"] > 0 and p["beta"] > 0
        row = dict(p)
        if ok:
            row.update(allocation_constants(p))
            for C, r in zip(budgets, compute_optimal(p, list(budgets)).itertuples()):
                row[f"N_opt@{C:.3g}"] = r.n_params
                row[f"D_opt@{C:.3g}"] = r.tokens
                row[f"D/N@{C:.3g}"] = r.tokens_per_param
                row[f"loss@{C:.3g}"] = r.loss
        else:
            row = {k: np.nan for k in row}
        rows.append(row)
    samples = pd.DataFrame(rows)
    n_failed = int(samples["alpha"].isna().sum())
    ci = percentile_ci(samples, level)
    pe = dict(full.params)
    pe.update(allocation_constants(full.params))
    msg = f"{n_resamples} resamples over runs, {n_failed} failed refits excluded"
    return BootstrapResult(
        samples, ci, n_resamples, level, seed, n_failed, n_failed < 0.05 * n_resamples, msg, pe
    )


def bootstrap_fit(
    fit_fn, frame: pd.DataFrame, *, n_resamples: int = 200, seed: int = 0, groups=None, level: float = 0.95
) -> BootstrapResult:
    """Generic bootstrap over rows (or groups) of `frame`: fit_fn(resampled_frame) -> dict of
    named numbers (NaN for a failed fit). Used for the Kaplan, frontier and IsoFLOP laws."""
    rng = np.random.default_rng(seed)
    W = resample_weights(len(frame), n_resamples, rng, groups)
    rows = []
    for w in W:
        idx = np.repeat(np.arange(len(frame)), w.astype(int))
        try:
            rows.append(fit_fn(frame.iloc[idx].reset_index(drop=True)))
        except Exception as e:  # noqa: BLE001 - a resample that cannot be fitted counts as failed
            log.debug("bootstrap resample not fitted: %s: %s", type(e).__name__, e)
            rows.append({})
    samples = pd.DataFrame(rows)
    n_failed = int(samples.isna().all(axis=1).sum()) if len(samples.columns) else n_resamples
    ci = percentile_ci(samples, level) if len(samples.columns) else {}
    return BootstrapResult(
        samples,
        ci,
        n_resamples,
        level,
        seed,
        n_failed,
        n_failed < 0.05 * n_resamples,
        f"{n_resamples} resamples, {n_failed} failed refits excluded",
    )
