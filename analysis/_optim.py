"""Batched numerical optimisation shared by the fitters.

`batched_lbfgs` runs many independent L-BFGS minimisations at once: every start is a row of
one (S, n) array, the objective returns (S,) values and (S, n) gradients, and each row has its
own history, line search and convergence flag. Rows leave the active set as they converge, so
the cost falls as the grid settles. This is what makes Hoffmann's 4500-start grid take seconds
instead of a minute: one numpy pass over (starts x points) per evaluation, no Python per start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fg(X, rows) -> (f, g): X is (k, n) for the given row indices (rows index any per-row data,
# e.g. bootstrap weights); f is (k,), g is (k, n). Non-finite f marks an invalid point.
BatchFG = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    x: np.ndarray  # (S, n) final points
    fun: np.ndarray  # (S,) objective values
    grad: np.ndarray  # (S, n) gradients at x
    nit: np.ndarray  # (S,) iterations used per row
    converged: np.ndarray  # (S,) bool: met a tolerance (not just ran out of iterations)


def batched_lbfgs(
    fg: BatchFG,
    x0: np.ndarray,
    *,
    m: int = 10,
    maxiter: int = 400,
    gtol: float = 1e-9,
    ftol: float = 1e-12,
    max_backtracks: int = 40,
    stall_window: int = 25,
    stall_rtol: float = 1e-7,
) -> BatchResult:
    """Minimise S problems at once by L-BFGS with an Armijo backtracking line search.

    A row converges when its max-abs gradient < gtol, or when a step reduces f by less than
    ftol * max(|f|, 1e-300) (relative). Rows whose line search fails, or that improve by less
    than stall_rtol (relative) over stall_window iterations (typically starts crawling along a
    flat, bad region), are frozen and flagged not converged; callers polish the best rows with
    scipy at tight tolerances anyway.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _batched_lbfgs(fg, x0, m, maxiter, gtol, ftol, max_backtracks, stall_window, stall_rtol)


def _direction(gi, Sh, Yh, rho, m):
    """L-BFGS two-loop recursion per row (history slot m-1 newest); rho == 0 skips a slot."""
    q = gi.copy()
    alph = np.zeros((gi.shape[0], m))
    for j in range(m - 1, -1, -1):
        a_j = rho[:, j] * np.einsum("ij,ij->i", Sh[:, j], q)
        alph[:, j] = a_j
        q -= a_j[:, None] * Yh[:, j]
    # initial Hessian scale from the newest accepted pair, else a gradient-size scale
    sy = np.einsum("ij,ij->i", Sh[:, -1], Yh[:, -1])
    yy = np.einsum("ij,ij->i", Yh[:, -1], Yh[:, -1])
    gam = np.where(
        rho[:, -1] > 0, sy / np.where(yy > 0, yy, 1.0), 1.0 / np.maximum(1.0, np.sum(np.abs(gi), axis=1))
    )
    r = gam[:, None] * q
    for j in range(m):
        b_j = rho[:, j] * np.einsum("ij,ij->i", Yh[:, j], r)
        r += Sh[:, j] * (alph[:, j] - b_j)[:, None]
    return -r


def _line_search(fg, idx, xi, fi, gi, d, gd, max_backtracks):
    """Armijo backtracking, evaluating only the rows still searching.
    Returns step sizes, new f and g, and the rows whose search failed."""
    t = np.ones(idx.size)
    fnew = np.full(idx.size, np.nan)
    gnew = np.zeros_like(gi)
    pending = np.arange(idx.size)
    for _ in range(max_backtracks):
        xt = xi[pending] + t[pending, None] * d[pending]
        ft, gt = fg(xt, idx[pending])
        ok = np.isfinite(ft) & (ft <= fi[pending] + 1e-4 * t[pending] * gd[pending])
        done = pending[ok]
        fnew[done] = ft[ok]
        gnew[done] = gt[ok]
        pending = pending[~ok]
        if pending.size == 0:
            break
        t[pending] *= 0.5
    failed = np.zeros(idx.size, dtype=bool)
    failed[pending] = True
    return t, fnew, gnew, failed


def _batched_lbfgs(fg, x0, m, maxiter, gtol, ftol, max_backtracks, stall_window, stall_rtol):
    X = np.array(x0, dtype=float, copy=True)
    S, n = X.shape
    rows_all = np.arange(S)
    f, g = fg(X, rows_all)
    Sh = np.zeros((S, m, n))
    Yh = np.zeros((S, m, n))
    rho = np.zeros((S, m))  # rho == 0 marks an empty / rejected history slot (a no-op)
    nit = np.zeros(S, dtype=int)
    conv = np.zeros(S, dtype=bool)
    active = np.isfinite(f)
    conv |= np.max(np.abs(np.where(np.isfinite(g), g, np.inf)), axis=1) < gtol
    active &= ~conv
    f_hist = np.full((stall_window, S), np.inf)  # ring buffer of past objective values

    for it in range(maxiter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi, xi, fi = g[idx], X[idx], f[idx]
        d = _direction(gi, Sh[idx], Yh[idx], rho[idx], m)
        gd = np.einsum("ij,ij->i", gi, d)
        bad = ~(gd < 0) | ~np.all(np.isfinite(d), axis=1)
        if bad.any():  # not a descent direction: reset this row to steepest descent
            d[bad] = -gi[bad] / np.maximum(1.0, np.sum(np.abs(gi[bad]), axis=1))[:, None]
            gd[bad] = np.einsum("ij,ij->i", gi[bad], d[bad])
            rho[idx[bad]] = 0.0
        t, fnew, gnew, failed = _line_search(fg, idx, xi, fi, gi, d, gd, max_backtracks)
        okr = ~failed
        s = t[:, None] * d
        y = gnew - gi
        sy = np.einsum("ij,ij->i", s, y)
        # roll history for the rows that stepped; store the pair only if curvature is positive
        upd = idx[okr]
        Sh[upd] = np.roll(Sh[upd], -1, axis=1)
        Yh[upd] = np.roll(Yh[upd], -1, axis=1)
        rho[upd] = np.roll(rho[upd], -1, axis=1)
        Sh[upd, -1] = s[okr]
        Yh[upd, -1] = y[okr]
        good = (sy[okr] > 1e-300) & (
            sy[okr]
            > 1e-16 * np.sqrt(np.einsum("ij,ij->i", s[okr], s[okr]) * np.einsum("ij,ij->i", y[okr], y[okr]))
        )
        rho[upd, -1] = np.where(good, 1.0 / np.where(good, sy[okr], 1.0), 0.0)
        dec = fi[okr] - fnew[okr]
        X[upd] = xi[okr] + s[okr]
        f[upd] = fnew[okr]
        g[upd] = gnew[okr]
        nit[idx] += 1
        c = (np.max(np.abs(gnew[okr]), axis=1) < gtol) | (dec <= ftol * np.maximum(np.abs(fnew[okr]), 1e-300))
        conv[upd] = c
        active[upd[c]] = False
        active[idx[failed]] = False  # line search failed: stuck at a kink or at the optimum
        old = f_hist[it % stall_window, upd]
        stalled = (old - f[upd]) <= stall_rtol * np.abs(f[upd])
        active[upd[stalled]] = False
        f_hist[it % stall_window, upd] = f[upd]
    return BatchResult(X, f, g, nit, conv)


def staged_lbfgs(
    make_fg: Callable[[np.ndarray | None], BatchFG],
    x0: np.ndarray,
    n_points: int,
    *,
    maxiter: int = 300,
    gtol: float = 1e-10,
    ftol: float = 1e-10,
    coarse_iters: int = 10,
    keep: int = 100,
    coarse_points: int = 2000,
    seed: int = 0,
) -> BatchResult:
    """Multi-start L-BFGS in two stages: a coarse pass runs every start for `coarse_iters`
    iterations (on a random subsample of `coarse_points` points when there are more), then
    only the `keep` best rows continue to convergence on all points.

    Most of a 4500-start grid falls into a handful of basins after a few iterations; running
    every start to convergence (and over every point) is what made the full fit cost
    points x starts. make_fg(idx) returns the objective over the points `idx` (None: all).
    Rows dropped after the coarse pass keep their coarse point, with the objective
    re-evaluated on all points, and are flagged not converged.
    """
    S = x0.shape[0]
    if S <= keep:
        return batched_lbfgs(make_fg(None), x0, maxiter=maxiter, gtol=gtol, ftol=ftol)
    sub = None
    if n_points > coarse_points:
        sub = np.sort(np.random.default_rng(seed).choice(n_points, coarse_points, replace=False))
    b1 = batched_lbfgs(make_fg(sub), x0, maxiter=coarse_iters, gtol=gtol, ftol=ftol)
    order = np.argsort(np.where(np.isfinite(b1.fun), b1.fun, np.inf), kind="stable")[:keep]
    fg_all = make_fg(None)
    b2 = batched_lbfgs(fg_all, b1.x[order], maxiter=maxiter, gtol=gtol, ftol=ftol)
    fun, grad = b1.fun.copy(), b1.grad.copy()
    if sub is not None:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            fun, grad = fg_all(b1.x, np.arange(S))
    x, nit, conv = b1.x.copy(), b1.nit.copy(), np.zeros(S, dtype=bool)
    x[order], fun[order], grad[order] = b2.x, b2.fun, b2.grad
    nit[order] += b2.nit
    conv[order] = b2.converged
    return BatchResult(x, fun, grad, nit, conv)
