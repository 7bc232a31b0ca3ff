"""Approach 3 fit speed: scalelab's fit vs a scipy loop with an analytic gradient, same process.

Run: .venv/bin/python benchmarks/fit_speed.py [--loop-starts 300] [--bootstrap 1000] [--big 10000]

1. Epoch subset (240 points), full 4500-start grid: scalelab's staged batched fit (coarse pass
   over every start, then the best 100 to convergence, polish, convergence check) against
   scipy L-BFGS-B started from each grid point with the same objective and its analytic
   gradient (timed on a random subset of starts, extrapolated to 4500; the output says so).
   Both must reach the same optimum (objective <= 1.0183e-3).
2. 1000 bootstrap resamples over runs.
3. A fit over `--big` synthetic points (planted parameters, 1% noise): the coarse pass runs on
   a 2000-point subsample; verified against a tight polish started at the planted parameters
   (the optimum near the truth), which the staged fit must match or beat.
Wall and CPU seconds are both printed: on a shared machine wall time is noisy.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from analysis import ChinchillaFit, bootstrap_chinchilla, load_csv
from analysis.laws.chinchilla import _fg_batch, _polish, hoffmann_grid, params_to_theta

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_epoch_svg_extracted.csv"


def _cpu():
    t = os.times()  # this process and its finished worker processes (user + system)
    return t.user + t.system + t.children_user + t.children_system


def timed(fn):
    w, c = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - w, _cpu() - c


def scipy_loop(starts, lN, lD, lL):
    def fun(x):
        f, g = _fg_batch(x[None, :], lN, lD, lL, 1e-3)
        return float(f[0]), g[0]

    return min(
        (minimize(fun, x0, jac=True, method="L-BFGS-B") for x0 in starts),
        key=lambda r: r.fun if np.isfinite(r.fun) else np.inf,
    )


def epoch_fit(args):
    pts = load_csv(DATA).drop_top_loss(5)
    lN, lD, lL = np.log(pts.N), np.log(pts.D), np.log(pts.loss)
    fit, w_fast, c_fast = timed(lambda: ChinchillaFit().fit(pts.N, pts.D, pts.loss))
    grid = hoffmann_grid()
    sub = grid[
        np.random.default_rng(0).choice(len(grid), size=min(args.loop_starts, len(grid)), replace=False)
    ]
    best, w_sub, c_sub = timed(lambda: scipy_loop(sub, lN, lD, lL))
    k = len(grid) / len(sub)
    print(f"data: {len(pts)} points (Epoch subset)")
    print(
        f"scalelab full grid ({len(grid)} starts, staged) + polish + convergence check: "
        f"{w_fast:.2f} s wall, {c_fast:.2f} s CPU; objective {fit.objective_:.7e}, "
        f"converged={fit.converged_}, same optimum: {fit.objective_ <= 1.0183e-3}"
    )
    print(
        f"scipy L-BFGS-B loop, analytic gradient: {len(sub)} random starts took {w_sub:.2f} s "
        f"wall, {c_sub:.2f} s CPU -> extrapolated to {len(grid)} starts: {w_sub * k:.1f} s wall, "
        f"{c_sub * k:.1f} s CPU; best objective among them {best.fun:.7e}"
    )
    print(f"speed-up: {w_sub * k / w_fast:.1f}x wall, {c_sub * k / c_fast:.1f}x CPU")
    return pts, fit


def bootstrap(args, pts, fit):
    b, w, c = timed(
        lambda: bootstrap_chinchilla(pts.N, pts.D, pts.loss, n_resamples=args.bootstrap, full_fit=fit, seed=0)
    )
    print(
        f"bootstrap: {args.bootstrap} resamples in {w:.2f} s wall ({c:.2f} s CPU, parent and its "
        f"2 worker processes); alpha CI [{b.ci['alpha'][0]:.4f}, {b.ci['alpha'][1]:.4f}], "
        f"beta CI [{b.ci['beta'][0]:.4f}, {b.ci['beta'][1]:.4f}], E CI [{b.ci['E'][0]:.4f}, "
        f"{b.ci['E'][1]:.4f}]"
    )


def big_fit(n):
    rng = np.random.default_rng(1)
    truth = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = N * np.exp(rng.uniform(np.log(2), np.log(200), n))
    L = (truth["E"] + truth["A"] / N ** truth["alpha"] + truth["B"] / D ** truth["beta"]) * np.exp(
        rng.normal(0, 0.01, n)
    )
    fit, w, c = timed(lambda: ChinchillaFit().fit(N, D, L))
    ref = _polish(params_to_theta(truth), np.log(N), np.log(D), np.log(L), 1e-3)
    same = fit.objective_ <= ref.fun * (1 + 1e-9)
    print(
        f"{n} points, full grid (coarse pass on 2000 points, best 100 starts on all): "
        f"{w:.2f} s wall, {c:.2f} s CPU; objective {fit.objective_:.7e} vs {ref.fun:.7e} from a "
        f"polish started at the planted parameters: same optimum: {same}; "
        f"alpha {fit.alpha_:.4f}, beta {fit.beta_:.4f}, E {fit.E_:.4f}"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop-starts", type=int, default=300, help="starts timed in the scipy loop")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--big", type=int, default=10000, help="points in the large fit (0: skip)")
    args = ap.parse_args()
    pts, fit = epoch_fit(args)
    bootstrap(args, pts, fit)
    if args.big:
        big_fit(args.big)


if __name__ == "__main__":
    main()
