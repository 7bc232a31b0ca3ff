"""Approach 3 fit speed: scalelab's batched full-grid fit vs a straightforward scipy loop.

Run: .venv/bin/python benchmarks/fit_speed.py [--loop-starts 450] [--bootstrap 1000]
On the Epoch subset (240 points). The plain loop (scipy L-BFGS-B, default tolerances, numerical
gradient-free objective as most published code does it, one start at a time) is timed on a
random subset of the 4500 starts and extrapolated to the full grid; the output says so.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from analysis import ChinchillaFit, bootstrap_chinchilla, load_csv
from analysis.chinchilla import hoffmann_grid

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_epoch_svg_extracted.csv"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop-starts", type=int, default=450, help="starts timed in the plain loop")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    pts = load_csv(DATA).drop_top_loss(5)
    lN, lD, lL = np.log(pts.N), np.log(pts.D), np.log(pts.loss)

    t = time.perf_counter()
    fit = ChinchillaFit().fit(pts.N, pts.D, pts.loss)
    t_fast = time.perf_counter() - t

    def obj(x):   # x = (e, a, b, alpha, beta), the textbook implementation
        e, a, b, al, be = x
        pred = logsumexp([a - al * lN, b - be * lD, np.full_like(lN, e)], axis=0)
        return np.sum(huber(1e-3, pred - lL))
    grid = hoffmann_grid()
    rng = np.random.default_rng(0)
    sub = grid[rng.choice(len(grid), size=min(args.loop_starts, len(grid)), replace=False)]
    t = time.perf_counter()
    best = min((minimize(obj, x0, method="L-BFGS-B") for x0 in sub), key=lambda r: r.fun)
    t_loop_sub = time.perf_counter() - t
    t_loop = t_loop_sub * len(grid) / len(sub)

    print(f"data: {len(pts)} points (Epoch subset)")
    print(f"batched full grid ({len(grid)} starts) + polish + convergence check: {t_fast:.2f} s, "
          f"objective {fit.objective_:.7e}, converged={fit.converged_}")
    print(f"plain scipy loop: {len(sub)} random starts took {t_loop_sub:.2f} s -> extrapolated to "
          f"{len(grid)} starts: {t_loop:.1f} s; best objective among them {best.fun:.7e}")
    print(f"speed-up: {t_loop / t_fast:.1f}x")
    t = time.perf_counter()
    b = bootstrap_chinchilla(pts.N, pts.D, pts.loss, n_resamples=args.bootstrap, full_fit=fit, seed=0)
    t_boot = time.perf_counter() - t
    print(f"bootstrap: {args.bootstrap} resamples in {t_boot:.2f} s (2 worker processes); "
          f"alpha CI [{b.ci['alpha'][0]:.4f}, {b.ci['alpha'][1]:.4f}], "
          f"beta CI [{b.ci['beta'][0]:.4f}, {b.ci['beta'][1]:.4f}], E CI [{b.ci['E'][0]:.4f}, {b.ci['E'][1]:.4f}]")


if __name__ == "__main__":
    main()
