"""Approaches 1 and 2."""

import numpy as np
import pandas as pd

from analysis.laws.chinchilla import compute_optimal, predict_loss
from analysis.laws.isoflop import envelope_fit, group_budgets, isoflop_fit

EPOCH = {"E": 1.8172, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3658}


def _isoflop_frame(loss_fn, n_opt_fn, budgets=np.logspace(18, 22, 5), spread=1.0, k=7, jitter=0.0):
    rows = []
    for C in budgets:
        for x in np.linspace(-spread, spread, k):
            N = n_opt_fn(C) * np.exp(x)
            Cj = C * (1 + jitter * x)  # actual FLOPs scatter a little around the budget
            rows.append(dict(n_params=N, flops=Cj, tokens=Cj / (6 * N), loss=loss_fn(N, C, x)))
    return pd.DataFrame(rows)


def test_exact_exponent_on_noise_free_parabolic_isoflops():
    a = 0.49
    df = _isoflop_frame(lambda N, C, x: 2 + 3 * C**-0.05 + 0.1 * x * x, lambda C: 0.1 * C**a, jitter=0.01)
    f = isoflop_fit(df)
    assert f.success_, f.message_
    assert abs(f.a_ - a) < 1e-10
    assert abs(f.b_ - (1 - a)) < 1e-10
    assert len(f.parabolas_) == 5 and f.parabolas_["in_range"].all()


def test_exact_exponent_on_chinchilla_law_isoflops():
    """Symmetric samples around the true optimum of E + A/N^a + B/D^b: vertex = optimum."""
    df = _isoflop_frame(
        lambda N, C, x: predict_loss(EPOCH, N, C / (6 * N)),
        lambda C: compute_optimal(EPOCH, C).n_params[0],
        spread=0.5,
        k=9,
    )
    f = isoflop_fit(df)
    expected = EPOCH["beta"] / (EPOCH["alpha"] + EPOCH["beta"])
    assert abs(f.a_ - expected) < 1e-6
    co = f.compute_optimal([1e21])
    assert abs(co.tokens_per_param[0] / compute_optimal(EPOCH, 1e21).tokens_per_param[0] - 1) < 5e-3


def test_isoflop_unidentifiable_with_one_budget():
    df = _isoflop_frame(lambda N, C, x: 2 + x * x, lambda C: 1e8, budgets=[1e19])
    f = isoflop_fit(df)
    assert not f.success_ and "unidentifiable" in f.message_


def test_group_budgets():
    b = group_budgets([1e18, 1.02e18, 0.99e18, 1e19, 1.01e19])
    assert len(np.unique(b)) == 2


def test_envelope_from_curves():
    """Training curves of a few sizes; the envelope's N_opt grows with C."""
    rows = []
    for i, N in enumerate(np.logspace(7, 9, 5)):
        D = np.logspace(8, 11, 60)
        L = predict_loss(EPOCH, N, D)
        rows += [dict(run_id=f"r{i}", n_params=N, tokens=d, flops=6 * N * d, loss=l) for d, l in zip(D, L)]
    f = envelope_fit(pd.DataFrame(rows))
    assert f.success_, f.message_
    assert 0.3 < f.a_ < 0.7
    assert f.envelope_["n_params"].is_monotonic_increasing
