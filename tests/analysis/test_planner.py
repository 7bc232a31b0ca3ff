"""The planner's maths: the Laplace variance against the bootstrap and the truth, greedy
selection under a budget, never a done point, the seed design."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import ChinchillaFit, bootstrap_chinchilla
from analysis.bootstrap import _warm_starts
from analysis.laws.chinchilla import EPOCH_REPLICATION, params_to_theta, predict_loss
from analysis.planner import (
    ci_history,
    ci_history_of,
    greedy_picks,
    laplace,
    plan_next_runs,
    target_value,
    variance_after_each,
)
from analysis.report.sections_more import planner_section


def _ctx(hist, target, base):
    """The parts of a ReportContext the planner section reads (no answer: Laplace rows only)."""
    from types import SimpleNamespace

    return SimpleNamespace(planner=hist, budgets=[target], answer=SimpleNamespace(ok=False), base=base)


THETA = params_to_theta(EPOCH_REPLICATION)


def design(k=6):
    N, D = np.meshgrid(np.logspace(7, 9, k), np.logspace(8.5, 10.5, k))
    return N.ravel(), D.ravel()


def noisy(N, D, rng, sd=0.01):
    return predict_loss(EPOCH_REPLICATION, N, D) * np.exp(rng.normal(0, sd, N.size))


def candidates():
    N, D = np.meshgrid(np.logspace(6.5, 9.5, 12), np.logspace(8, 11, 12))
    N, D = N.ravel(), D.ravel()
    return N, D, 6 * N * D


def test_laplace_interval_matches_the_bootstrap_on_the_epoch_data(epoch_points, epoch_fit):
    """Real case: Chinchilla's points. The Laplace sd of log N_opt at 1e24 is within a factor
    0.5-1.2 of the run-level bootstrap's (measured 0.67: the bootstrap's skewed beta tail)."""
    C = 1e24
    m = laplace(epoch_fit.theta_, epoch_points.N, epoch_points.D, epoch_points.loss, C)
    b = bootstrap_chinchilla(
        epoch_points.N,
        epoch_points.D,
        epoch_points.loss,
        n_resamples=200,
        budgets=[C],
        full_fit=epoch_fit,
        seed=3,
    )
    boot_sd = float(np.log(b.samples[f"N_opt@{C:.3g}"].dropna()).std())
    ratio = math.sqrt(m.variance) / boot_sd
    assert 0.5 < ratio < 1.2, ratio
    lo, hi = m.ci95()
    blo, bhi = b.ci[f"N_opt@{C:.3g}"]
    assert lo < hi and blo < math.exp(m.value) < bhi  # same centre, overlapping intervals


def test_laplace_sd_matches_the_true_sampling_spread_and_covers(rng):
    """Synthetic, known law: over 30 noisy replicates the Laplace sd of log N_opt is within 25%
    of the estimates' actual spread, and the 95% interval covers the truth >= 80% of the time."""
    N, D = design()
    C = 100 * 6 * N.max() * D.max()
    truth = target_value(THETA, C)
    sds, est, cover = [], [], 0
    for _ in range(30):
        L = noisy(N, D, rng)
        f = ChinchillaFit(grid=_warm_starts(THETA)).fit(N, D, L)
        m = laplace(f.theta_, N, D, L, C)
        sds.append(math.sqrt(m.variance))
        est.append(m.value)
        cover += abs(m.value - truth) <= 1.96 * sds[-1]
    assert abs(np.mean(sds) / np.std(est) - 1) < 0.25
    assert cover >= 24


def test_sherman_morrison_update_equals_adding_the_run(rng):
    N, D = design(4)
    L = noisy(N, D, rng)
    m = laplace(THETA, N, D, L, 1e24)
    cN, cD, _ = candidates()
    fast = variance_after_each(m, cN[:20], cD[:20])
    slow = [m.add_runs(cN[i : i + 1], cD[i : i + 1]).variance for i in range(20)]
    np.testing.assert_allclose(fast, slow, rtol=1e-6)
    assert np.all(fast <= m.variance + 1e-15)


def test_greedy_respects_budget_exclusions_and_shrinks_the_interval(rng):
    N, D = design(4)
    L = noisy(N, D, rng)
    m = laplace(THETA, N, D, L, 1e24)
    cN, cD, cost = candidates()
    budget = 0.3 * cost.max()
    best = greedy_picks(m, cN, cD, cost, max_runs=50, max_flops=math.inf)[0].index
    picks = greedy_picks(m, cN, cD, cost, max_runs=6, max_flops=budget, exclude=[best])
    assert 1 <= len(picks) <= 6
    assert sum(p.flops for p in picks) <= budget
    idx = [p.index for p in picks]
    assert best not in idx and len(set(idx)) == len(idx)
    v = [m.variance] + [p.variance_after for p in picks]
    assert all(b < a for a, b in zip(v, v[1:]))  # each pick narrows the interval
    # the expected variance is what adding all picks at once gives
    after = m.add_runs(cN[idx], cD[idx]).variance
    assert after == pytest.approx(picks[-1].variance_after, rel=1e-6)


def test_too_few_points_give_a_seed_design():
    cN, cD, cost = candidates()
    plan = plan_next_runs([1e7, 1e8], [1e9, 1e9], [3.0, 2.8], cN, cD, cost, target_flops=1e24)
    assert plan.seed and plan.value is None and "seed design" in plan.message
    picked_N = {p.n_params for p in plan.picks}
    picked_D = {p.tokens for p in plan.picks}
    assert len(plan.picks) == 9 and len(picked_N) == 3 and len(picked_D) == 3
    assert min(picked_N) == cN.min() and max(picked_N) == cN.max()  # spans the range


def test_plan_from_enough_points_is_greedy_and_reports_the_interval(rng):
    N, D = design(4)
    L = noisy(N, D, rng)
    cN, cD, cost = candidates()
    plan = plan_next_runs(N, D, L, cN, cD, cost, target_flops=1e24, max_runs=3, max_flops=cost.max())
    assert not plan.seed and plan.n_points == 16 and len(plan.picks) == 3
    lo, hi = plan.ci95
    assert lo < plan.value < hi
    assert plan.flops_requested <= cost.max()
    e_lo, e_hi = plan.picks[-1].expected_ci95
    assert e_hi - e_lo < hi - lo


def test_ci_section_charts_the_interval_against_flops(rng):
    N, D = design(4)
    L = noisy(N, D, rng)
    order = np.argsort(6 * N * D)
    rounds = np.repeat([0, 1, 2, 3], 4)[np.argsort(order)]
    hist = ci_history(N, D, L, 6 * N * D, order, 1e24, rounds=rounds)
    assert [h["round"] for h in hist] == [2, 3] and hist[-1]["n_points"] == 16
    assert hist[0]["flops_spent"] < hist[1]["flops_spent"]
    sec = planner_section(_ctx(hist, 1e24, None))
    assert set(sec) == {"title", "markdown", "figures"} and "planner_ci.png" in sec["figures"]
    assert "Laplace" in sec["markdown"]
    assert planner_section(_ctx([], 1e24, None)) is None


def test_planner_section_from_a_points_frame(rng):
    import pandas as pd

    N, D = design(4)
    frame = pd.DataFrame(
        {
            "n_params": N,
            "tokens": D,
            "loss": noisy(N, D, rng),
            "flops": 6 * N * D,
            "round": np.repeat([0, 0, 1, 2], 4),
        }
    )
    hist = ci_history_of(frame, 1e24, round_col="round")
    sec = planner_section(_ctx(hist, 1e24, frame))
    assert "| 16 |" in sec["markdown"] and sec["figures"]


def test_a_fit_at_zero_irreducible_loss_gives_a_finite_interval(rng):
    """Undertrained tiny studies fit E -> 0 (log E = -inf): N_opt does not depend on E, so the
    planner still plans, with a finite interval."""
    N, D = design(4)
    L = noisy(N, D, rng)
    theta = THETA.copy()
    theta[0] = -np.inf
    m = laplace(theta, N, D, L, 1e24)
    lo, hi = m.ci95()
    assert np.isfinite(m.variance) and 0 < lo < hi < np.inf
