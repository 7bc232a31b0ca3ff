"""How much compute `suggest` saves: FLOPs to reach the full grid's interval width on log N_opt.

Run: .venv/bin/python benchmarks/planner.py [--studies 54] [--noise 0.01] [--seed 0]

Simulator: a ground-truth law L(N, D) = E + A/N^alpha + B/D^beta (three laws: Epoch's refit of
Chinchilla, Chinchilla's published values, and a steeper-N / flatter-D law), run-level noise
multiplicative in the loss (Gaussian in log loss, sd --noise, default 0.01: Epoch's 240
Chinchilla points leave a residual sd of 0.0076 in log loss after the Approach 3 fit; seed-to-seed
noise is up to 3.5% in Choshen et al.), cost of a run 6·N·D. The study's grid is 7 x 7, N in
[1e7, 1e9], D in [10^8.5, 10^10.5]; the target is log N_opt at C* = 100x the grid's largest run.
Every method is refitted (Approach 3, Huber, warm started) as it grows and judged by the same
Laplace interval (analysis.planner), so widths compare like for like:

  full grid   all 49 runs; its 95% half-width w is the width every other method must reach;
  suggest     a cheap 3 x 3 seed (lower two thirds of the grid's log N and log D ranges), then
              rounds of 3 runs chosen by analysis.planner's greedy variance reduction /
              FLOPs^0.4 among the candidates `suggest` builds for this grid (10 x 10, N and D
              from 0.5x the grid's smallest to 4x its largest), until the half-width <= w;
  doubling    kyo-takano/chinchilla progressive scaling from the same seed: each round the
              candidate nearest the fitted optimum at twice the largest compute so far (no
              uncertainty model), until the half-width <= w;
  random      the same seed, then 3 random candidates at a time, until the half-width <= w.
A method that has not reached w by 3x the grid's FLOPs stops (its last step may overshoot).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from analysis.bootstrap import _warm_starts
from analysis.laws.chinchilla import ChinchillaFit, params_to_theta, predict_loss
from analysis.planner import greedy_picks, laplace, target_value

LAWS = {
    "epoch": {"E": 1.8172, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3658},
    "chinchilla": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
    "steep-N": {"E": 2.0, "A": 1500.0, "B": 300.0, "alpha": 0.45, "beta": 0.25},
}
Z = 1.959963984540054


SPAN = (0.5, 4.0)  # the candidate range of orchestrator/study/suggest.py, relative to the grid
MAX_SPEND = 3.0  # a method that has not reached the width by 3x the grid's FLOPs stops


def grid_pool():
    N, D = np.meshgrid(np.logspace(7, 9, 7), np.logspace(8.5, 10.5, 7))
    return N.ravel(), D.ravel()


def candidate_pool():
    """What `suggest` builds for this grid: 10 x 10 log grid over [0.5x min, 4x max] of N and D."""
    N, D = np.meshgrid(
        np.logspace(7 + math.log10(SPAN[0]), 9 + math.log10(SPAN[1]), 10),
        np.logspace(8.5 + math.log10(SPAN[0]), 10.5 + math.log10(SPAN[1]), 10),
    )
    return N.ravel(), D.ravel()


def cheap_seed():
    """3 sizes x 3 budgets over the lower two thirds (log) of the grid's N and D ranges."""
    N, D = np.meshgrid(np.logspace(7, 7 + 4 / 3, 3), np.logspace(8.5, 8.5 + 4 / 3, 3))
    return N.ravel(), D.ravel()


class Study:
    """One simulated study: a noisy loss per possible run (drawn once), refits as runs are added."""

    def __init__(self, law, noise, rng):
        gN, gD = grid_pool()
        cN, cD = candidate_pool()
        sN, sD = cheap_seed()
        self.N, self.D = np.concatenate([gN, sN, cN]), np.concatenate([gD, sD, cD])
        self.cost = 6 * self.N * self.D
        self.grid, self.seed = np.arange(49), np.arange(49, 58)
        self.cands = np.arange(58, 58 + cN.size)
        self.law = law
        self.loss = predict_loss(law, self.N, self.D) * np.exp(rng.normal(0, noise, self.N.size))
        self.grid_flops = self.cost[self.grid].sum()
        self.C = 100 * self.cost[self.grid].max()
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
    <= width (or MAX_SPEND x the grid's FLOPs). Returns (flops, reached, covered)."""
    study.theta = None
    done, m = [], None
    while study.cost[done].sum() <= MAX_SPEND * study.grid_flops:
        nxt = order_fn(study, done, m)
        if not nxt:
            break
        done += [int(i) for i in nxt if i not in done]
        if len(done) >= 9:
            m = study.model(done)
            if study.halfwidth(m) <= width:
                return study.cost[done].sum(), True, study.covered(m)
    return study.cost[done].sum(), False, study.covered(m)


def _rest(study, done):
    return [int(i) for i in study.cands if i not in done]


def suggest_order(study, done, m):
    if not done:
        return list(study.seed)
    if m is None:  # unusable fit: widen with the cheapest run
        return _rest(study, done)[:1]
    allowed = np.zeros(study.N.size, bool)
    allowed[study.cands] = True
    excl = [i for i in range(study.N.size) if not allowed[i] or i in done]
    picks = greedy_picks(m, study.N, study.D, study.cost, max_runs=3, exclude=excl)
    return [p.index for p in picks]


def random_order(rng):
    def order(study, done, m):
        if not done:
            return list(study.seed)
        rest = _rest(study, done)
        return list(rng.choice(rest, size=min(3, len(rest)), replace=False)) if rest else []

    return order


def doubling_order(rng):
    """Progressive scaling: the same seed, then the candidate nearest the fitted optimum at
    twice the largest compute so far (no uncertainty model)."""

    def order(study, done, m):
        if not done:
            return list(study.seed)
        rest = _rest(study, done)
        if not rest:
            return []
        if study.theta is None:
            return [int(rng.choice(rest))]
        c = 2 * study.cost[done].max()
        e, a, b, al, be = study.theta
        lg = (np.log(al) + a - np.log(be) - b) / (al + be)
        ln = lg + be / (al + be) * np.log(c / 6)
        ld = -lg + al / (al + be) * np.log(c / 6)
        d2 = (np.log(study.N[rest]) - ln) ** 2 + (np.log(study.D[rest]) - ld) ** 2
        return [rest[int(np.argmin(d2))]]

    return order


def simulate(law, noise, rng):
    s = Study(law, noise, rng)
    m = s.model(s.grid)
    w = s.halfwidth(m)
    out = {"full grid": (s.grid_flops, True, s.covered(m))}
    out["suggest"] = run_until(s, suggest_order, w)
    out["doubling"] = run_until(s, doubling_order(rng), w)
    out["random"] = run_until(s, random_order(rng), w)
    return s.grid_flops, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=54, help="simulated studies (split over 3 laws)")
    ap.add_argument("--noise", type=float, default=0.01, help="run-level sd of log loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="one line per simulated study")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    rows = {k: [] for k in ("full grid", "suggest", "doubling", "random")}
    for i in range(a.studies):
        law = list(LAWS.values())[i % len(LAWS)]
        total, out = simulate(law, a.noise, rng)
        for k, (flops, reached, cov) in out.items():
            rows[k].append((flops / total, reached, cov))
        if a.verbose:
            print(
                f"study {i + 1}: "
                + ", ".join(
                    f"{k} {f / total:.3f}{'' if r else ' (not reached)'}{'' if c else ' MISSED'}"
                    for k, (f, r, c) in out.items()
                ),
                flush=True,
            )
    print(
        f"{a.studies} simulated studies over {len(LAWS)} laws ({', '.join(LAWS)}), "
        f"noise sd {a.noise:g} in log loss, 49-run pool, C* = 100x the largest run; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(f"{'method':10} {'FLOPs/grid median':>18} {'mean':>7} {'reached w':>10} {'coverage':>9}")
    for k, r in rows.items():
        frac = np.array([x[0] for x in r])
        print(
            f"{k:10} {np.median(frac):18.3f} {frac.mean():7.3f} "
            f"{np.mean([x[1] for x in r]):10.0%} {np.mean([x[2] for x in r]):9.0%}"
        )


if __name__ == "__main__":
    main()
