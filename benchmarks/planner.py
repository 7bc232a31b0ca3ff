"""How much compute `suggest` saves: FLOPs to reach the full grid's interval width on log N_opt.

Run: .venv/bin/python benchmarks/planner.py [--studies 54] [--noise 0.01] [--seed 0]

Simulator: a ground-truth law L(N, D) = E + A/N^alpha + B/D^beta (three laws: Epoch's refit of
Chinchilla, Chinchilla's published values, and a steeper-N / flatter-D law), run-level noise
multiplicative in the loss (Gaussian in log loss, sd --noise), cost of a run 6·N·D. The run pool
is a 7 x 7 grid, N in [1e7, 1e9], D in [10^8.5, 10^10.5]; the target is log N_opt at C* = 100x
the largest run. Every method draws from the same pool and is refitted (Approach 3, Huber, warm
started) as it grows; the interval of every method is the same Laplace interval
(analysis.planner), so widths compare like for like:

  full grid   all 49 runs; its 95% half-width w is the width every other method must reach;
  suggest     a 3 x 3 seed design, then rounds of 3 runs chosen by analysis.planner's greedy
              variance reduction / FLOPs^0.4, until the half-width <= w;
  doubling    kyo-takano/chinchilla progressive scaling: 4 random runs (log-uniform compute
              and D/N), then each round the pool run nearest the fitted optimum at twice the
              largest compute so far (no uncertainty model), until the half-width <= w;
  random      pool runs in random order, 3 at a time after 9, until the half-width <= w.

Printed per method: median and mean FLOPs to reach w as a fraction of the full grid's FLOPs,
the share of studies that reached w inside the pool, and the coverage of the true N_opt(C*) by
the final 95% interval. The goal: suggest <= 1/3 of the full grid's FLOPs with >= 90% coverage.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from analysis.bootstrap import _warm_starts
from analysis.chinchilla import ChinchillaFit, params_to_theta, predict_loss
from analysis.planner import greedy_picks, laplace, seed_design, target_value

LAWS = {
    "epoch": {"E": 1.8172, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3658},
    "chinchilla": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
    "steep-N": {"E": 2.0, "A": 1500.0, "B": 300.0, "alpha": 0.45, "beta": 0.25},
}
Z = 1.959963984540054


def pool():
    N, D = np.meshgrid(np.logspace(7, 9, 7), np.logspace(8.5, 10.5, 7))
    return N.ravel(), D.ravel(), 6 * N.ravel() * D.ravel()


class Study:
    """One simulated study: a noisy loss per pool run (drawn once), refits as runs are added."""

    def __init__(self, law, noise, rng):
        self.N, self.D, self.cost = pool()
        self.law = law
        self.loss = predict_loss(law, self.N, self.D) * np.exp(rng.normal(0, noise, self.N.size))
        self.C = 100 * self.cost.max()
        self.truth = target_value(params_to_theta(law), self.C)
        self.theta = None

    def model(self, idx):
        """Laplace model of the fit on runs `idx` (None if the fit is unusable)."""
        idx = np.asarray(idx)
        grid = "coarse" if self.theta is None else _warm_starts(self.theta)
        f = ChinchillaFit(grid=grid, n_polish=2).fit(self.N[idx], self.D[idx], self.loss[idx])
        if not (f.success_ and 0 < f.alpha_ < 3 and 0 < f.beta_ < 3):
            return None
        self.theta = f.theta_
        return laplace(f.theta_, self.N[idx], self.D[idx], self.loss[idx], self.C)

    def halfwidth(self, m):
        return math.inf if m is None else Z * math.sqrt(m.variance)

    def covered(self, m):
        return m is not None and abs(m.value - self.truth) <= Z * math.sqrt(m.variance)


def run_until(study, order_fn, width):
    """Grow the design with order_fn(study, done, model) -> next indices until the half-width
    <= width. Returns (flops, reached, covered)."""
    study.theta = None
    done, m = [], None
    while True:
        nxt = order_fn(study, done, m)
        if not nxt:
            break
        done += [i for i in nxt if i not in done]
        if len(done) >= 9:
            m = study.model(done)
            if study.halfwidth(m) <= width:
                return study.cost[done].sum(), True, study.covered(m)
    return study.cost[done].sum(), False, study.covered(m)


def suggest_order(study, done, m):
    if not done:
        return seed_design(study.N, study.D, study.cost)
    if m is None:                                  # unusable fit: widen with a random run
        rest = [i for i in range(study.N.size) if i not in done]
        return rest[:1]
    picks = greedy_picks(m, study.N, study.D, study.cost, max_runs=3, exclude=done)
    return [p.index for p in picks]


def random_order(rng):
    def order(study, done, m):
        if not done:
            order.perm = list(rng.permutation(study.N.size))
            return order.perm[:9]
        rest = [i for i in order.perm if i not in done]
        return rest[:3]
    return order


def doubling_order(rng):
    """Progressive scaling: random start, then the run nearest the optimum at 2x compute."""
    def order(study, done, m):
        lN, lD = np.log(study.N), np.log(study.D)
        rest = [i for i in range(study.N.size) if i not in done]
        if not rest:
            return []
        if len(done) < 9 or study.theta is None:   # log-uniform compute and D/N
            lc = rng.uniform(np.log(study.cost.min()), np.log(study.cost.max()))
            lr = rng.uniform(np.log(1.0), np.log(300.0))
            ln = 0.5 * (lc - np.log(6) - lr)
            ld = ln + lr
        else:
            c = 2 * study.cost[done].max()
            th = study.theta
            al, be, a, b = th[3], th[4], th[1], th[2]
            lg = (np.log(al) + a - np.log(be) - b) / (al + be)
            ln = lg + be / (al + be) * np.log(c / 6)
            ld = -lg + al / (al + be) * np.log(c / 6)
        d2 = [(lN[i] - ln) ** 2 + (lD[i] - ld) ** 2 for i in rest]
        return [rest[int(np.argmin(d2))]]
    return order


def simulate(law, noise, rng):
    s = Study(law, noise, rng)
    full = list(range(s.N.size))
    m = s.model(full)
    w = s.halfwidth(m)
    out = {"full grid": (s.cost.sum(), True, s.covered(m))}
    out["suggest"] = run_until(s, suggest_order, w)
    out["doubling"] = run_until(s, doubling_order(rng), w)
    out["random"] = run_until(s, random_order(rng), w)
    return s.cost.sum(), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=54, help="simulated studies (split over 3 laws)")
    ap.add_argument("--noise", type=float, default=0.01, help="run-level sd of log loss")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    rows = {k: [] for k in ("full grid", "suggest", "doubling", "random")}
    for i in range(a.studies):
        law = list(LAWS.values())[i % len(LAWS)]
        total, out = simulate(law, a.noise, rng)
        for k, (flops, reached, cov) in out.items():
            rows[k].append((flops / total, reached, cov))
    print(f"{a.studies} simulated studies over {len(LAWS)} laws ({', '.join(LAWS)}), "
          f"noise sd {a.noise:g} in log loss, 49-run pool, C* = 100x the largest run; "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'method':10} {'FLOPs/grid median':>18} {'mean':>7} {'reached w':>10} {'coverage':>9}")
    for k, r in rows.items():
        frac = np.array([x[0] for x in r])
        print(f"{k:10} {np.median(frac):18.3f} {frac.mean():7.3f} "
              f"{np.mean([x[1] for x in r]):10.0%} {np.mean([x[2] for x in r]):9.0%}")


if __name__ == "__main__":
    main()
