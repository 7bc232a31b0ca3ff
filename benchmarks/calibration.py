"""Calibration of the answer's intervals and verdict on simulated studies with planted laws.

Each simulated study plants L = E + A/N^alpha + B/D^beta (a third of them with alpha = beta),
draws a grid design (the quickstart's 4 sizes x 3 budgets over 1.5 x 1 decades, or 5 x 4 over
2 x 1.5 decades), adds lognormal noise (sd 0.3% to 1% of the loss), and computes the answer
exactly as `scalelab report` and `fit` do (analysis.answer.compute_answer: forms chosen by
cross-validation over compute, a bootstrap with the choice repeated inside). It then checks:

  - coverage of the 95% interval of N_opt at 1x and 10x the largest run (truth: the planted
    law's allocation, C = 6ND);
  - coverage of the 95% prediction interval of the loss of held-out runs: four runs beyond the
    grid (2x and 4x the largest N, 1.5x and 4x the largest D), drawn with the same noise;
  - the verdict's promise: of the budgets judged "good", the fraction whose true N_opt lies within
    2x of the estimate; of those judged "rough", within 10x (the thresholds in analysis/verdict.py);
  - with --compare-units, the same coverage when the bootstrap resamples whole model sizes.

    python benchmarks/calibration.py                    # 100 studies, resampling runs
    python benchmarks/calibration.py --studies 200 --jobs 2 --compare-units

Goal (issue 18): 90-98% coverage for N_opt and for held-out loss.
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from analysis.answer import compute_answer
from analysis.data import Points

DESIGNS = {
    "4x3": (np.logspace(3.6, 5.1, 4), np.logspace(5.0, 6.0, 3)),  # the quickstart's
    "5x4": (np.logspace(6.0, 8.0, 5), np.logspace(8.0, 9.5, 4)),
}


def planted(rng, design: str) -> dict:
    """A planted law whose N and D terms are each 10-60% of E at the design's centre."""
    Ns, Ds = DESIGNS[design]
    al = rng.uniform(0.25, 0.6)
    be = al if rng.uniform() < 1 / 3 else rng.uniform(0.25, 0.6)
    E = rng.uniform(0.8, 2.0)
    Nc, Dc = math.sqrt(Ns[0] * Ns[-1]), math.sqrt(Ds[0] * Ds[-1])
    A = rng.uniform(0.1, 0.6) * E * Nc**al
    B = rng.uniform(0.1, 0.6) * E * Dc**be
    return {"E": E, "A": A, "B": B, "alpha": al, "beta": be}


def law(p, N, D):
    return p["E"] + p["A"] / np.asarray(N, float) ** p["alpha"] + p["B"] / np.asarray(D, float) ** p["beta"]


def n_opt(p, C) -> float:
    G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    return float(G * (C / 6.0) ** (p["beta"] / (p["alpha"] + p["beta"])))


def one_study(args) -> dict:
    seed, resample, n_boot = args
    rng = np.random.default_rng(seed)
    design = "4x3" if seed % 2 == 0 else "5x4"
    p = planted(rng, design)
    sd = rng.uniform(0.003, 0.01)
    Ns, Ds = DESIGNS[design]
    N, D = np.repeat(Ns, Ds.size), np.tile(Ds, Ns.size)
    L = law(p, N, D) * np.exp(rng.normal(0, sd, N.size))
    frame = pd.DataFrame({"n_params": N, "tokens": D, "flops": 6 * N * D, "loss": L})
    Nh = np.repeat(Ns[-1] * np.array([2.0, 4.0]), 2)
    Dh = np.tile(Ds[-1] * np.array([1.5, 4.0]), 2)
    Lh = law(p, Nh, Dh) * np.exp(rng.normal(0, sd, Nh.size))
    cmax = float(frame["flops"].max())
    budgets = [cmax, 10 * cmax]
    t0 = time.perf_counter()
    ans = compute_answer(Points(frame), budgets=budgets, n_bootstrap=n_boot, seed=seed, resample=resample)
    dt = time.perf_counter() - t0
    out = {"seed": seed, "design": design, "form": ans.form, "seconds": dt, "sd": sd}
    if not ans.ok:
        return out
    for k, C in (("1x", budgets[0]), ("10x", budgets[1])):
        r = ans.row(C)
        truth = n_opt(p, C)
        out[f"cover_{k}"] = bool(r["n_params_lo"] <= truth <= r["n_params_hi"])
        out[f"ratio_{k}"] = max(r["n_params"] / truth, truth / r["n_params"])
        out[f"verdict_{k}"] = r["verdict"]
    pred = ans.predict(Nh, Dh)
    out["holdout_cover"] = float(np.mean((pred["lo"] <= Lh) & (Lh <= pred["hi"])))
    return out


def run(n: int, resample: str, n_boot: int, jobs: int) -> pd.DataFrame:
    tasks = [(s, resample, n_boot) for s in range(n)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as ex:
            return pd.DataFrame(list(ex.map(one_study, tasks)))
    return pd.DataFrame([one_study(t) for t in tasks])


def report(df: pd.DataFrame, resample: str) -> None:
    ok = df.dropna(subset=["cover_1x"])
    print(
        f"resampling {resample}: {len(ok)} of {len(df)} studies with an answer; "
        f"{df['seconds'].median():.2f} s per answer (median)"
    )
    print(
        f"  coverage of 95% intervals: N_opt at 1x the largest run {ok['cover_1x'].mean():.1%}, "
        f"at 10x {ok['cover_10x'].mean():.1%}; held-out loss {ok['holdout_cover'].mean():.1%} "
        f"({4 * len(ok)} runs beyond the grid)"
    )
    for d, g in ok.groupby("design"):
        print(
            f"  design {d}: N_opt 1x {g['cover_1x'].mean():.1%}, 10x {g['cover_10x'].mean():.1%}, "
            f"held-out loss {g['holdout_cover'].mean():.1%} ({len(g)} studies)"
        )
    print("  forms chosen: " + ", ".join(f"{k} {v}" for k, v in ok["form"].value_counts().items()))
    v = pd.concat(
        [
            ok[["verdict_1x", "ratio_1x"]].set_axis(["verdict", "ratio"], axis=1),
            ok[["verdict_10x", "ratio_10x"]].set_axis(["verdict", "ratio"], axis=1),
        ]
    )
    for level, factor in (("good", 2.0), ("rough", 10.0)):
        g = v[v["verdict"] == level]
        frac = f"{(g['ratio'] <= factor).mean():.1%}" if len(g) else "n/a"
        print(f"  verdict {level}: {len(g)} budgets; true N_opt within {factor:g}x of the estimate: {frac}")
    print(f"  verdict poor: {int((v['verdict'] == 'poor').sum())} budgets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples per answer (the report's: 200)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--compare-units", action="store_true", help="also resample whole model sizes")
    a = ap.parse_args()
    t0 = time.perf_counter()
    print(
        f"calibration: {a.studies} simulated studies (planted laws, lognormal noise 0.3-1%, designs "
        f"{', '.join(DESIGNS)}), {a.bootstrap} resamples each"
    )
    report(run(a.studies, "runs", a.bootstrap, a.jobs), "runs")
    if a.compare_units:
        report(run(a.studies, "sizes", a.bootstrap, a.jobs), "sizes")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
